//! Build script: embedded migrations and the commit `recwatch_build_info` reports.

use std::path::Path;
use std::process::Command;

fn main() {
    // Embedded migrations (sqlx::migrate!) must be rebuilt when a migration file is added to
    // either backend's directory (a directory is scanned whole).
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations/sqlite");
    println!("cargo:rerun-if-changed=migrations/postgres");
    println!("cargo:rustc-env=RECWATCH_COMMIT={}", commit());
}

/// The commit being built, for `recwatch_build_info{commit}` and `--version`'s neighbours.
/// A packager building from a tarball can set `RECWATCH_COMMIT`; without it and without git
/// (or outside a repository) it is "unknown": the build never fails over this.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=RECWATCH_COMMIT");
    if let Ok(c) = std::env::var("RECWATCH_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then_some(())?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let Some(hash) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points to (a commit)
    // and packed-refs (a gc). In a worktree HEAD is in the worktree's git dir, the branch in
    // the common one.
    for (dir_arg, file) in [("--git-dir", "HEAD"), ("--git-common-dir", "packed-refs")] {
        if let Some(dir) = git(&["rev-parse", dir_arg]) {
            watch(&Path::new(&dir).join(file));
        }
    }
    if let (Some(dir), Some(head_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        watch(&Path::new(&dir).join(head_ref));
    }
    hash
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
