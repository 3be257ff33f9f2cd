//! Extension protocol (BEP 10) payloads: `ExtendedHandshake::decode` and
//! ut_metadata's `MetadataMessage::decode` on the same arbitrary bytes.
//! What decodes must re-encode and decode to the same value.
#![no_main]

use bytes::Bytes;
use essaim_wire::extension::{
    ExtendedHandshake, MetadataMessage, MAX_EXTENSIONS, METADATA_PIECE_SIZE,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut hs) = ExtendedHandshake::decode(data) {
        assert!(hs.extensions.len() <= MAX_EXTENSIONS);
        assert_ne!(hs.listen_port, Some(0));
        let mut back = ExtendedHandshake::decode(&hs.encode()).expect("re-encoded handshake");
        // The encoder sorts `m` by name; the decoder keeps input order.
        hs.extensions.sort();
        back.extensions.sort();
        assert_eq!(back, hs);
    }
    let payload = Bytes::copy_from_slice(data);
    if let Ok(msg) = MetadataMessage::decode(&payload) {
        if let MetadataMessage::Data { data, .. } = &msg {
            assert!(data.len() <= METADATA_PIECE_SIZE);
        }
        let back = MetadataMessage::decode(&Bytes::from(msg.encode())).expect("re-encoded");
        assert_eq!(back, msg);
    }
});
