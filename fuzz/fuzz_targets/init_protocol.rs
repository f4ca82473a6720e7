//! The wire format between the host and `vana-init`, both directions: decoding never panics, and
//! what decodes encodes back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vana_sandbox_init::protocol::{HostMessage, InitMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = HostMessage::decode(data) {
        if let Ok(bytes) = m.encode() {
            assert!(HostMessage::decode(&bytes).is_ok());
        }
    }
    if let Ok(m) = InitMessage::decode(data) {
        let again = InitMessage::decode(&m.encode());
        assert!(again.is_ok());
    }
});
