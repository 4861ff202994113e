//! Token verification on arbitrary text never panics, accepts nothing unsigned, and a
//! token it accepts round-trips.
#![no_main]

use adtally_core::token::TokenSigner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let signer = TokenSigner::new(b"fuzz-secret");
    if let Ok(token) = signer.verify(text) {
        // Only a token this signer made can verify, and then it round-trips.
        assert_eq!(signer.sign(&token), text);
    }
});
