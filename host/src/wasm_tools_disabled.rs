//! This wpod was built without the author tools (the `author-tools` cargo feature, on by
//! default): `wpod new --lang c` and `wpod component new` say so. Running pods needs none of
//! them; a runner image leaves them out.

/// wpod's interfaces and the WASI packages they use, as `wpod new` writes them.
pub type WitFiles<'a> = &'a [(&'a str, &'a str)];

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "this wpod was built without the author tools (cargo feature author-tools): C bindings \
         and `wpod component new` need a wpod built with them"
    )]
    Disabled,
}

pub fn c_bindings(_wit: WitFiles<'_>) -> Result<Vec<(String, Vec<u8>)>, ToolError> {
    Err(ToolError::Disabled)
}

pub fn component_new(_core: &[u8], _wit: WitFiles<'_>) -> Result<Vec<u8>, ToolError> {
    Err(ToolError::Disabled)
}
