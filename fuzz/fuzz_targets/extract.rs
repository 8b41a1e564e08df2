//! Arbitrary bytes as a cache entry: the decoders, the tar reader and the
//! extractor must refuse or restore, never panic, and never write outside
//! the mounts being restored (checked by `Sandbox::restore`).
//!
//! Input: one configuration byte, then the entry. Bits 0-1 pick the `mount`
//! setting (see `sandbox::SPECS`); bit 2 leaves a symlink to the outside
//! directory inside the workspace, as an earlier restore may have.
#![no_main]

use std::sync::OnceLock;

use larder_fuzz::sandbox::Sandbox;
use libfuzzer_sys::fuzz_target;

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(Sandbox::new)
}

fuzz_target!(
    init: larder_fuzz::write_seeds(larder_fuzz::seeds::extract),
    |data: &[u8]| {
        let Some((&config, entry)) = data.split_first() else {
            return;
        };
        let escape_link = config & 4 != 0;
        if escape_link && larder_fuzz::skip_known() {
            return;
        }
        let sandbox = sandbox();
        sandbox.reset(escape_link);
        let specs = sandbox.specs(config & 3);
        sandbox.restore(entry.to_vec(), &specs);
    }
);
