//! Environment variables read by the client (`RemoteStateStoreProvider::from_env`)
//! and written by the operator into the `<name>-connection` Secret.

pub const URL: &str = "DRASI_STATE_STORE_URL";
pub const TOKEN: &str = "DRASI_STATE_STORE_TOKEN";
pub const TOKEN_FILE: &str = "DRASI_STATE_STORE_TOKEN_FILE";
pub const CA_CERT: &str = "DRASI_STATE_STORE_CA_CERT";
pub const CA_FILE: &str = "DRASI_STATE_STORE_CA_FILE";
