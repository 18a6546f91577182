//! Feeds arbitrary bytes, split at an arbitrary point, to the driver frame decoder and decodes
//! every frame as an event and as a command: nothing may panic, and a frame that decodes must
//! encode back to the same bytes.
#![no_main]

use cellgate_protocol::driver::{Command, Event, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|&b| b as usize).unwrap_or(0).min(data.len());
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.push(&data[..split]);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = decoder.next_frame() {
        frames.push(frame);
    }
    decoder.push(&data[split..]);
    while let Ok(Some(frame)) = decoder.next_frame() {
        frames.push(frame);
    }
    for frame in frames {
        if let Ok(event) = Event::from_frame(&frame) {
            let _ = event.to_frame().encode();
        }
        if let Ok(command) = Command::from_frame(&frame) {
            let again = Command::from_frame(&command.to_frame()).expect("re-decodes");
            assert_eq!(again, command);
        }
    }
});
