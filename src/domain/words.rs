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
