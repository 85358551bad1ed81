//! Holds' rule: what a held notice becomes when its hold ends. Pure, a table test; the
//! release pass (`crate::hold::deliver`) asks it with what the store knows now.

use crate::domain::Status;
use crate::hold::domain::{AfterHold, HeldCause, HeldNotice};

/// What becomes of each held notice whose hold (silence or maintenance window) has ended,
/// decided from what the store knows now. "Still true" is:
/// - a transition's alert: the transition is still the job's latest (the job did not move
///   since, e.g. back to RUNNING);
/// - a condition's firing notice or reminder: its episode is still open; of the notices of
///   one episode held on one channel, only the first is sent (the oldest the receiver
///   missed), so a silence that held back a firing and three reminders ends in one notice;
/// - a resolved notice: sent only where an earlier notice of its episode was sent, so a
///   receiver that was told the condition began learns that it ended; a condition that began
///   and cleared within the hold is never told at all.
///
/// The answer is in the order of `held`.
pub fn after_hold(held: &[HeldNotice]) -> Vec<AfterHold> {
    use std::collections::HashMap;
    // The first (lowest order) notice of each open episode on each channel.
    let mut first: HashMap<(i64, &str), i64> = HashMap::new();
    for h in held {
        if let (HeldCause::Episode { id, open: true, .. }, Status::Firing) = (&h.cause, h.status) {
            let e = first.entry((*id, h.channel.as_str())).or_insert(h.order);
            *e = (*e).min(h.order);
        }
    }
    held.iter()
        .map(|h| match (&h.cause, h.status) {
            (HeldCause::Transition { still_latest: true }, _) => AfterHold::Send,
            (
                HeldCause::Transition {
                    still_latest: false,
                },
                _,
            ) => AfterHold::Drop(
                "the job changed while it was held, so what it said no longer holds",
            ),
            (HeldCause::Unknown, _) => {
                AfterHold::Drop("its transition or episode is no longer recorded")
            }
            (HeldCause::Episode { earlier_sent, .. }, Status::Resolved) => {
                if *earlier_sent {
                    AfterHold::Send
                } else {
                    AfterHold::Drop("the condition began and cleared while it was held")
                }
            }
            (HeldCause::Episode { open: false, .. }, Status::Firing) => {
                AfterHold::Drop("the condition cleared while it was held")
            }
            (HeldCause::Episode { id, open: true, .. }, Status::Firing) => {
                if first.get(&(*id, h.channel.as_str())) == Some(&h.order) {
                    AfterHold::Send
                } else {
                    AfterHold::Drop("an earlier held notice of the same condition is sent instead")
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_hold_table() {
        let n = |channel: &str, order: i64, status: Status, cause: HeldCause| HeldNotice {
            alert_id: format!("a{order}-{channel}"),
            channel: channel.into(),
            order,
            status,
            cause,
        };
        let ep = |id, open, earlier_sent| HeldCause::Episode {
            id,
            open,
            earlier_sent,
        };
        let latest = |still_latest| HeldCause::Transition { still_latest };
        let send = AfterHold::Send;
        let dropped = |h: &AfterHold| matches!(h, AfterHold::Drop(_));
        struct Case {
            name: &'static str,
            held: Vec<HeldNotice>,
            send: Vec<bool>,
        }
        let cases = [
            Case {
                name: "a job still stopped: its alert goes out",
                held: vec![n("hook", 1, Status::Firing, latest(true))],
                send: vec![true],
            },
            Case {
                name: "a job that recovered meanwhile: nothing",
                held: vec![n("hook", 1, Status::Firing, latest(false))],
                send: vec![false],
            },
            Case {
                name: "a condition still open: its firing notice, once, not its reminders",
                held: vec![
                    n("hook", 1, Status::Firing, ep(7, true, false)),
                    n("hook", 2, Status::Firing, ep(7, true, false)),
                    n("hook", 3, Status::Firing, ep(7, true, false)),
                ],
                send: vec![true, false, false],
            },
            Case {
                name: "once per channel: each channel gets its first",
                held: vec![
                    n("hook", 2, Status::Firing, ep(7, true, false)),
                    n("mail", 2, Status::Firing, ep(7, true, false)),
                    n("hook", 3, Status::Firing, ep(7, true, false)),
                ],
                send: vec![true, true, false],
            },
            Case {
                name: "reminders only (the firing was sent before): the first held reminder",
                held: vec![
                    n("hook", 5, Status::Firing, ep(7, true, true)),
                    n("hook", 4, Status::Firing, ep(7, true, true)),
                ],
                send: vec![false, true],
            },
            Case {
                name: "a condition that cleared: neither its firing nor its resolution",
                held: vec![
                    n("hook", 1, Status::Firing, ep(7, false, false)),
                    n("hook", 2, Status::Resolved, ep(7, false, false)),
                ],
                send: vec![false, false],
            },
            Case {
                name: "a resolution of a condition the receiver was told of",
                held: vec![n("hook", 2, Status::Resolved, ep(7, false, true))],
                send: vec![true],
            },
            Case {
                name: "two episodes are two notices",
                held: vec![
                    n("hook", 1, Status::Firing, ep(7, true, false)),
                    n("hook", 2, Status::Firing, ep(8, true, false)),
                ],
                send: vec![true, true],
            },
            Case {
                name: "a pruned cause: nothing",
                held: vec![n("hook", 1, Status::Firing, HeldCause::Unknown)],
                send: vec![false],
            },
            Case {
                name: "nothing held",
                held: vec![],
                send: vec![],
            },
        ];
        for c in cases {
            let got = after_hold(&c.held);
            let sent: Vec<bool> = got.iter().map(|h| *h == send).collect();
            assert_eq!(sent, c.send, "{}", c.name);
            assert!(got.iter().all(|h| *h == send || dropped(h)), "{}", c.name);
        }
    }
}
