//! `token kube SITE`: a Kubernetes `ExecCredential` for kubectl's exec plugin.

use serde_json::{json, Value};

use super::print;
use crate::cli::GetArgs;
use crate::time::rfc3339;
use crate::ClientError;

pub fn run(args: GetArgs) -> Result<u8, ClientError> {
    let reply = super::get::get(&args)?;
    let mut status = json!({ "token": reply.access_token });
    if let Some(at) = reply.expires_at {
        status["expirationTimestamp"] = Value::String(rfc3339(at));
    }
    let cred = json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": status,
    });
    print(&format!("{cred}\n"))
}
