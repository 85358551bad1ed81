//! The process's exit codes (sysexits(3)) and the start-up error that carries one.
//!
//! systemd tells a broken configuration (78, `RestartPreventExitStatus=78`: a restart cannot
//! help) from a fault a restart may cure (73, a directory that cannot be created yet; 69, a
//! port still held by the process being replaced; 75, a database another process owns). The
//! command line turns an error chain into one of these ([`crate::cli`]).

pub use crate::config::EXIT_CONFIG;
/// `EX_USAGE`: a command's arguments are wrong (an id that cannot be one, a channel that does
/// not exist); the message says which and the fix.
pub const EXIT_USAGE: u8 = 64;
/// `EX_UNAVAILABLE`: something recwatch needs is held by someone else (the HTTP port).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// `EX_CANTCREAT`: the storage directory or database cannot be created or written.
pub const EXIT_CANTCREAT: u8 = 73;
/// `EX_TEMPFAIL`: another process owns the database; trying again later may work.
pub const EXIT_IN_USE: u8 = 75;

/// A start-up failure: what went wrong, the fix, and the exit code it means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub exit: u8,
    pub message: String,
}

impl StartError {
    /// A command's arguments are wrong (64).
    pub fn usage(message: String) -> StartError {
        StartError {
            exit: EXIT_USAGE,
            message,
        }
    }

    /// The database is busy with another process's write beyond the busy timeout (75): trying
    /// again shortly works.
    pub fn busy(message: String) -> StartError {
        StartError {
            exit: EXIT_IN_USE,
            message,
        }
    }

    /// A storage directory or database that cannot be created or written (73).
    pub fn cantcreat(message: String) -> StartError {
        StartError {
            exit: EXIT_CANTCREAT,
            message,
        }
    }
}
