//! `recwatch test-alert`: a test notification through each channel (or one), each result
//! reported; exit 1 if any failed, 64 if `--channel` names no channel (a name on the command
//! line the config does not know is a usage error, in every command), 78 if there are none.

use super::{complain, config_error, emit};
use crate::config::{Config, EXIT_CONFIG};
use crate::exit::EXIT_USAGE;
use std::process::ExitCode;

pub(super) async fn test_alert(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let channels = match crate::notify::Channel::of_config(config) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e)),
    };
    let channels: Vec<_> = channels
        .into_iter()
        .filter(|c| only.is_none_or(|n| c.name() == n))
        .collect();
    if channels.is_empty() {
        return Ok(match only {
            Some(n) => {
                complain(&format!(
                    "--channel: no channel is named {n:?}; the channels are {:?}",
                    config.notify.channel_names()
                ));
                ExitCode::from(EXIT_USAGE)
            }
            None => {
                complain(
                    "no channels are configured: add [[notify.webhook]], [[notify.email]] or a chat channel such as [[notify.slack]] (see config.example.toml)",
                );
                ExitCode::from(EXIT_CONFIG)
            }
        });
    }
    // The first account's, as a job of an app naming none would be.
    let alert = crate::domain::Alert {
        account: config
            .all_accounts()
            .next()
            .unwrap_or(&config.api)
            .name
            .to_string(),
        ..crate::domain::test_alert()
    };
    let mut failed = 0;
    for c in &channels {
        match c.send(&alert).await {
            Ok(()) => out!(
                "{:<10} {:<20} ok (alert id {})",
                c.kind(),
                c.name(),
                alert.id
            )?,
            Err(e) => {
                failed += 1;
                out!(
                    "{:<10} {:<20} FAILED{}: {e}",
                    c.kind(),
                    c.name(),
                    if e.needs_a_fix() {
                        " (refused: check the receiver and this channel's settings)"
                    } else {
                        ""
                    }
                )?;
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
