//! placeholder
use crate::cli::CorrelateArgs;
pub fn run(_a: &CorrelateArgs) -> anyhow::Result<()> {
    anyhow::bail!("correlate: not yet")
}
