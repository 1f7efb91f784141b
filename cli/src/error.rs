//! Errors as users read them: the server's message, as kubectl prints it.

/// One line for an error: for API errors `Error from server (Reason): message`, as kubectl prints them.
pub fn describe(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(kube::Error::Api(status)) = cause.downcast_ref::<kube::Error>() {
            return format!("Error from server ({}): {}", status.reason, status.message);
        }
    }
    format!("{e:#}")
}
