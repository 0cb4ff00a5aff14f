//! `token kube SITE`: a Kubernetes `ExecCredential` for kubectl's exec plugin.

use serde_json::{json, Value};

use super::print;
use crate::cli::GetArgs;
use crate::time::rfc3339;
use crate::ClientError;

pub fn run(mut args: GetArgs) -> Result<u8, ClientError> {
    args.interactive = args
        .interactive
        .or_else(|| exec_info_interactive(std::env::var("KUBERNETES_EXEC_INFO").ok()?.as_str()));
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

/// kubectl's `KUBERNETES_EXEC_INFO` `spec.interactive`, when it says.
fn exec_info_interactive(info: &str) -> Option<bool> {
    let v: Value = serde_json::from_str(info).ok()?;
    v.get("spec")?.get("interactive")?.as_bool()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_says_whether_it_is_interactive() {
        let info = |i: &str| {
            format!(
                r#"{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{{"interactive":{i}}}}}"#
            )
        };
        assert_eq!(exec_info_interactive(&info("false")), Some(false));
        assert_eq!(exec_info_interactive(&info("true")), Some(true));
        assert_eq!(exec_info_interactive(r#"{"spec":{}}"#), None);
        assert_eq!(exec_info_interactive("not json"), None);
    }
}
