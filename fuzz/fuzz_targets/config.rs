//! `Config::from_toml` on arbitrary UTF-8: it must return Ok or a list of
//! problems, never panic (the loader runs on operator input at start and on
//! every hot reload, where a panic would take the gateway down).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sharegate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A folder with nothing in it: relative file names in the input resolve
    // to files that do not exist, so validation reports them and reads none.
    let _ = Config::from_toml(text, Path::new("nonexistent-config-dir"));
});
