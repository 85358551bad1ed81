//! Looking at text eight bytes at a time (issue 23, item 7): the configuration's lean reader
//! and `status --json` each ask of every string whether it holds one of a few bytes, and a
//! test per byte was most of their time at 100,000 jobs.

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// Non-zero exactly when a byte of `w` is below `n` (`n` at most 0x80): `(w - n..) & !w &
/// 0x80..` (bytes of 0x80 and above never count: `!w` clears their high bit).
pub fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH
}

/// Non-zero exactly when a byte of `w` is `c` (`w ^ c..` has a zero byte then).
pub fn equal(w: u64, c: u8) -> u64 {
    below(w ^ (ONES * u64::from(c)), 1)
}

/// Whether `word` is non-zero for any eight bytes of `b`, which is at least eight long: each
/// word in turn, and the tail as the last eight bytes, overlapping the words before.
pub fn any_word(b: &[u8], word: impl Fn(u64) -> u64) -> bool {
    let at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let mut found = 0;
    let mut i = 0;
    while i + 8 <= b.len() {
        found |= word(at(i));
        i += 8;
    }
    found |= word(at(b.len() - 8));
    found != 0
}

/// Non-zero exactly when a byte of `w` is 0x80 or above (not ASCII).
pub fn high(w: u64) -> u64 {
    w & HIGH
}

/// Whether every byte of `b` is printable ASCII other than `"` and `\`: text that a JSON
/// string and a terminal's cell both show as it is, with as many characters as bytes (issue
/// 23, item 7: `status` asks it once of each job's row, on the thread that reads the rows,
/// instead of asking each value again while writing).
pub fn plain(b: &[u8]) -> bool {
    if b.len() < 8 {
        return b
            .iter()
            .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\');
    }
    !any_word(b, |w| {
        below(w, 0x20) | high(w) | equal(w, 0x7f) | equal(w, b'"') | equal(w, b'\\')
    })
}

/// Whether every byte of `b` is printable ASCII (0x20 to 0x7e): text a terminal shows as it
/// is, with as many characters as bytes.
pub fn printable(b: &[u8]) -> bool {
    if b.len() < 8 {
        return b.iter().all(|c| (0x20..0x7f).contains(c));
    }
    !any_word(b, |w| below(w, 0x20) | high(w) | equal(w, 0x7f))
}

#[cfg(test)]
mod tests {
    /// `plain` and `printable` (a word at a time) say what a byte at a time says, for every
    /// byte at every place of a word and of the tail after it.
    #[test]
    fn plain_and_printable_text_is_found_wherever_a_byte_is_not() {
        for b in 0..=255u8 {
            let want = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            for len in 1..=17 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(super::plain(&s), want, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(super::plain(b""));
        for b in 0..=255u8 {
            let want = (0x20..0x7f).contains(&b);
            for len in 1..=17 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(super::printable(&s), want, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(super::printable(b"a \"quoted\" \\ value"));
        assert!(super::plain(b"2026-01-01T00:00:00.000Z RUNNING job-0001"));
        assert!(!super::plain("enregistrement \u{e9}".as_bytes()));
    }
}
