//! Bencode decoder: `decode` and `decode_prefix` on arbitrary bytes. A value
//! that decodes must re-encode (canonically, keys sorted) to bytes that
//! decode to the same value; since the decoder accepts only canonical
//! integers and lengths, the re-encoding has exactly the input's length.
#![no_main]

use essaim_core::bencode::{decode, decode_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let prefix = decode_prefix(data);
    if let Ok((v, rest)) = &prefix {
        assert_eq!(v.raw.len() + rest.len(), data.len());
        assert_eq!(v.raw, &data[..v.raw.len()]);
    }
    match decode(data) {
        Ok(v) => {
            assert!(matches!(&prefix, Ok((_, rest)) if rest.is_empty()));
            assert_eq!(v.raw, data);
            let owned = v.to_owned_value();
            let encoded = owned.encode();
            assert_eq!(encoded.len(), data.len(), "re-encoding changed the length");
            let again = decode(&encoded).expect("a re-encoded value decodes");
            assert_eq!(again.raw, &encoded[..]);
            assert_eq!(
                again.to_owned_value(),
                owned,
                "round trip changed the value"
            );
            // Canonical form is a fixed point.
            assert_eq!(again.to_owned_value().encode(), encoded);
        }
        Err(e) => {
            assert!(e.offset <= data.len());
            if let Ok((_, rest)) = &prefix {
                assert!(!rest.is_empty(), "decode failed but decode_prefix took all");
            }
        }
    }
});
