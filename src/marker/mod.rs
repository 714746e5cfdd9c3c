//! `netstack-lat marker`: TC programs on the chosen interfaces hand the payload bytes of the
//! chosen TCP ports to this process, which follows each stream, finds the marker field
//! (`"interval_id": N`, with `"position"`) and records its first sighting per capture point.
//! `correlate` (pair.rs) joins two such captures.

pub mod pair;
pub mod record;
pub mod scan;

use anyhow::Result;

use crate::cli::MarkerArgs;

pub fn run(_a: &MarkerArgs) -> Result<()> {
    anyhow::bail!("marker: not yet")
}
