//! Patches: JSON merge patch (RFC 7386) and JSON Patch (RFC 6902).
