//! Fuzzes the host <-> agent frame decoder: the input is a byte stream from
//! a hostile peer, split into chunks at positions the input chooses. The
//! decoder must never panic, the one-shot `decode` and the incremental
//! `Decoder` must agree, and every frame it accepts must re-encode into
//! bytes that decode to the same frame.
#![no_main]

use cocoon_proto::{decode, Decoder, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size for feeding the incremental decoder.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

    // One-shot decoding of everything, frame after frame.
    let mut whole = Vec::new();
    let mut rest = stream;
    let whole_err = loop {
        match decode(rest) {
            Ok(Some((frame, used))) => {
                assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
                whole.push(frame);
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };

    // Incremental decoding in chunks must give the same frames and error.
    let mut d = Decoder::new();
    let mut inc = Vec::new();
    let mut inc_err = None;
    'feed: for piece in stream.chunks(chunk) {
        d.feed(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => inc.push(f),
                Ok(None) => break,
                Err(e) => {
                    inc_err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(whole, inc);
    assert_eq!(whole_err, inc_err);

    for f in whole {
        let bytes = f.to_vec().expect("an accepted frame re-encodes");
        let (again, used) = decode(&bytes)
            .expect("a re-encoded frame decodes")
            .expect("a re-encoded frame is complete");
        assert_eq!(used, bytes.len());
        assert_eq!(again, f);
        let _: Frame = again;
    }
});
