//! Column values in their type's binary send format (`COPY … (FORMAT
//! binary)`), decoded into the same [`cdc_core::Value`] the text parser
//! gives for the same value, so both render exactly as `to_jsonb` does.

// used by the binary COPY reader
#[allow(dead_code)]
mod ascii;
// used by the binary COPY reader
#[allow(dead_code)]
mod datetime;
// used by the binary COPY reader
#[allow(dead_code)]
mod interval;
// used by the binary COPY reader
#[allow(dead_code)]
mod numeric;

/// Bytes from a hex string, for test vectors copied from `encode(…_send(x),
/// 'hex')`.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod proptests;
