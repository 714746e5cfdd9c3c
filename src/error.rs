//! User errors: a one-line message naming the problem and the fix, exit code 2.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError(pub String);

impl UserError {
    pub fn new(msg: impl Into<String>) -> Self {
        UserError(msg.into())
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Exit code for an error chain: 2 for the user's mistakes, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.downcast_ref::<UserError>().is_some()) {
        2
    } else {
        1
    }
}

/// The message to print: a user error alone, otherwise the whole chain on one line.
pub fn message(e: &anyhow::Error) -> String {
    match e.chain().find_map(|c| c.downcast_ref::<UserError>()) {
        Some(u) => u.0.clone(),
        None => format!("{e:#}"),
    }
}

/// Root (or the BPF capabilities) is needed for every command that loads programs.
pub fn require_root() -> Result<(), UserError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    Err(UserError::new(
        "netstack-lat must run as root (it loads BPF programs: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run it with sudo",
    ))
}
