//! A channel's pace: at most so many messages in any window of time, per the vendor's limit
//! (DingTalk and WeCom 20 a minute, Feishu 5 a second and 100 a minute, Slack 1 a second).
//!
//! It is a token bucket whose tokens come back one window after each was spent, rather than
//! one refilled at a steady rate: a bucket of 20 refilled at 20 a minute lets 39 messages
//! through in its first minute, and DingTalk throttles a robot for ten minutes after its 21st.
//! Pure: the caller passes the time, so it is tested on tokio's paused clock.

use crate::notify::Window;
use std::collections::VecDeque;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Pace {
    /// Each window and the times of the last `messages` sends it counts, oldest first.
    windows: Vec<(Window, VecDeque<Instant>)>,
    /// The vendor said it is throttling us: nothing goes before this.
    held: Option<Instant>,
}

impl Pace {
    pub fn new(windows: &[Window]) -> Pace {
        Pace {
            windows: windows
                .iter()
                .filter(|w| w.messages > 0)
                .map(|w| (*w, VecDeque::new()))
                .collect(),
            held: None,
        }
    }

    /// The vendor answered "too fast" and asked for `until`: every message on this channel
    /// waits, not only the one refused (DingTalk throttles the whole robot).
    pub fn hold(&mut self, until: Instant) {
        self.held = Some(self.held.map_or(until, |h| h.max(until)));
    }

    /// The windows this pace was made for.
    pub fn is_for(&self, windows: &[Window]) -> bool {
        self.windows.len() == windows.iter().filter(|w| w.messages > 0).count()
            && self.windows.iter().zip(windows).all(|((w, _), x)| w == x)
    }

    /// The earliest time, at or after `now`, a message may go.
    pub fn next_free(&self, now: Instant) -> Instant {
        self.windows
            .iter()
            .filter(|(w, sent)| sent.len() >= w.messages as usize)
            .filter_map(|(w, sent)| sent.front().map(|oldest| *oldest + w.per))
            .chain(self.held)
            .fold(now, Instant::max)
    }

    /// Takes a token: the time the message may go (at or after `now`), counted as spent then.
    /// Concurrent senders each get their own time, one after the other.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let at = self.next_free(now);
        for (w, sent) in &mut self.windows {
            let pos = sent.partition_point(|t| *t <= at);
            sent.insert(pos, at);
            while sent.len() > w.messages as usize {
                sent.pop_front();
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    /// (name, windows, reservations asked for at start, the offsets they get)
    #[test]
    fn reservations_table() {
        let per_minute = [Window::new(3, 60 * S)];
        let two = [Window::new(2, S), Window::new(3, 10 * S)];
        let cases: Vec<(&str, &[Window], usize, Vec<Duration>)> = vec![
            ("no limit", &[], 3, vec![Duration::ZERO; 3]),
            (
                "three a minute: the fourth waits for the first's minute",
                &per_minute,
                5,
                vec![
                    Duration::ZERO,
                    Duration::ZERO,
                    Duration::ZERO,
                    60 * S,
                    60 * S,
                ],
            ),
            (
                "two windows: the tighter one at each point",
                &two,
                5,
                vec![Duration::ZERO, Duration::ZERO, S, 10 * S, 10 * S],
            ),
        ];
        for (name, windows, n, want) in cases {
            let start = Instant::now();
            let mut pace = Pace::new(windows);
            let got: Vec<Duration> = (0..n).map(|_| pace.reserve(start) - start).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// At most `messages` in any window, whenever the sends are asked for: 40 sends asked at
    /// random moments through 20-a-minute never put 21 in any 60 s.
    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_window_allows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let windows = [Window::new(20, 60 * S)];
        let mut pace = Pace::new(&windows);
        let mut times = Vec::new();
        for _ in 0..40 {
            tokio::time::advance(Duration::from_millis(rng.random_range(0..5000))).await;
            let at = pace.reserve(Instant::now());
            assert!(at >= Instant::now());
            times.push(at);
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + 60 * S).count();
            assert!(in_window <= 20, "{in_window} sends within 60 s of send {i}");
        }
        // And it is not slower than it must be: the 21st goes exactly a minute after the 1st.
        assert_eq!(times[20] - times[0], 60 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_after_the_window() {
        let mut pace = Pace::new(&[Window::new(1, S)]);
        let t0 = Instant::now();
        assert_eq!(pace.reserve(t0), t0);
        assert_eq!(pace.next_free(t0), t0 + S);
        tokio::time::advance(S).await;
        assert_eq!(pace.next_free(Instant::now()), Instant::now());
        assert!(pace.is_for(&[Window::new(1, S)]));
        // A vendor's "too fast" holds every send until the time it asked for.
        let now = Instant::now();
        pace.hold(now + 600 * S);
        pace.hold(now + 60 * S);
        assert_eq!(pace.next_free(now), now + 600 * S);
        assert_eq!(pace.reserve(now), now + 600 * S);
        assert!(!pace.is_for(&[Window::new(2, S)]));
    }
}
