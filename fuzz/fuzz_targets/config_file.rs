//! Arbitrary text as the YAML config file (`crier -C FILE` with no other flags): the loader
//! must never panic, must explain every rejection, and every config it accepts must start a
//! node.

#![no_main]

use crier_core::Node;
use crier_smol::config::settings_from_file_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match settings_from_file_text(text) {
        Ok(settings) => {
            assert!(
                !settings.core.app.key.is_empty(),
                "accepted an empty app key"
            );
            assert!(
                settings.websocket_host.contains(':'),
                "{}",
                settings.websocket_host
            );
            assert!(settings.api_host.contains(':'), "{}", settings.api_host);
            if let Err(error) = Node::new(settings.core, 1) {
                panic!("accepted a config the node rejects: {error}");
            }
        }
        Err(error) => assert!(!error.to_string().is_empty(), "rejection without a message"),
    }
});
