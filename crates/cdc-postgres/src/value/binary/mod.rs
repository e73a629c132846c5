//! Column values in their type's binary send format (`COPY … (FORMAT
//! binary)`), decoded into the same [`cdc_core::Value`] the text parser
//! gives for the same value, so both render exactly as `to_jsonb` does.
