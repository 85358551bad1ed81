//! `recwatch run`: the daemon, until SIGINT or SIGTERM (see [`crate::startup`]).

use crate::config::Config;

pub(super) async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::startup::shutdown_on_signals()?;
    crate::startup::run(config, shutdown, |_| {}).await
}
