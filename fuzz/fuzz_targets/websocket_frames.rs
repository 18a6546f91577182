//! Decodes arbitrary websocket payloads, text and binary, as Jupyter messages: nothing may
//! panic, and whatever decodes must survive a round trip through both framings.
#![no_main]

use cellgate_protocol::wire::{self, Framing, Payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payloads = [
        Payload::Binary(data.to_vec()),
        Payload::Text(String::from_utf8_lossy(data).into_owned()),
    ];
    for payload in payloads {
        if let Ok(message) = wire::decode(&payload) {
            for framing in [Framing::LegacyJson, Framing::V1] {
                let again = wire::decode(&wire::encode(&message, framing)).expect("re-decodes");
                assert_eq!(again.header, message.header);
                assert_eq!(again.channel, message.channel);
            }
        }
    }
});
