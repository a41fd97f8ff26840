//! [`UploadParts`]: where an upload's bytes are in a multipart object store. The one record the
//! blob store (which writes the parts) and the metadata (which keeps it in the upload's row, so
//! that another replica can continue the upload) share; it depends on nothing, so neither of
//! them depends on the other.

/// Where an S3 session's bytes are, besides its tail: the multipart upload and its parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadParts {
    pub multipart: Option<String>,
    /// The ETag of each part, in order.
    pub etags: Vec<String>,
    /// Bytes in the parts; the tail holds the rest (`size - parts_bytes`).
    pub parts_bytes: u64,
}
