//! Command-line parsing (lexopt) and the help text.

use std::ffi::OsString;

use lexopt::prelude::*;
use token_proto::{parse_duration, LoginMode};

use crate::ClientError;

pub const HELP: &str = "\
token — print fresh OAuth access tokens, kept fresh by the tokend daemon

USAGE:
    token get SITE [--min-ttl DUR] [--scope S]... [--format raw|header|json] [--no-login] [--id-token]
              [--dpop METHOD URL [--dpop-nonce NONCE]]
    token login SITE [--device | --paste]
    token logout SITE
    token status [SITE] [--json]
    token exec SITE [--env VAR] [--dpop METHOD URL] -- COMMAND [ARGS]...
    token kube SITE [--id-token]
    token credential get|store|erase      (git credential helper; also git-credential-token)
    token completions bash|zsh|fish
    token reload | token stop

COMMANDS:
    get       Print a valid access token for SITE on stdout and nothing else.
              Logs in through your browser first if the site needs consent.
                --min-ttl DUR   the token must stay valid this long (300, 90s, 5m, 1h)
                --scope S       a token for a subset of the site's scopes (repeatable)
                --format F      raw (default) | header (`Authorization: Bearer ...`) |
                                json (token, type, expires_at, scopes, api_key)
                --no-login      never start a login: exit 3 instead
                --dpop METHOD URL  for `dpop = true` sites: also a DPoP proof for
                                that one request, signed by tokend. raw prints the
                                token on line 1 and the proof on line 2; header
                                prints `Authorization: DPoP ...` and `DPoP: ...`;
                                json adds dpop_proof
                --dpop-nonce NONCE  the nonce the resource server asked for in
                                its DPoP-Nonce header, for that proof
                --id-token      the site's validated OpenID Connect ID token instead
                                (the site's scopes must include openid)
    login     Run consent for SITE now (browser + PKCE; --device shows a code to
              enter on another device; --paste reads the final URL from stdin).
    logout    Revoke SITE's tokens at the provider where possible; forget them here.
    status    Every site (or one): state, expiry, scopes, last refresh, last error.
    exec      Run COMMAND with the token in $VAR (default TOKEN); with --dpop METHOD
              URL also the proof for that request in $DPOP.
    kube      Print a Kubernetes ExecCredential (client.authentication.k8s.io/v1);
              --id-token (or the site key kube_token = \"id_token\") puts the ID token
              in it, for clusters that authenticate users with OIDC.
    credential  The git credential helper: git config credential.helper token
              (the site is the one whose `hosts` lists the remote's host).
    completions  Print a completion script that also completes site names:
              bash: source <(token completions bash)   (e.g. in ~/.bashrc)
              zsh:  source <(token completions zsh)    fish: token completions fish | source
    reload    Re-read the config file now (tokend also watches it).
    stop      Ask the daemon to exit.

EXAMPLES:
    curl -H \"Authorization: Bearer $(token get corp)\" https://api.example.com/me
    curl -H \"$(token get corp --format header)\" https://api.example.com/me
    token exec corp -- terraform plan
    token exec corp --dpop GET https://api.example.com/me -- \
        sh -c 'curl -H \"Authorization: DPoP $TOKEN\" -H \"DPoP: $DPOP\" https://api.example.com/me'

ENVIRONMENT:
    TOKEND_SOCKET        socket path (default $XDG_RUNTIME_DIR/tokend/tokend.sock)
    TOKEND_CONFIG        config file (default: the platform config dir, tokend/config.toml)
    TOKEND_NO_AUTOSTART  1: never start tokend when none answers
    BROWSER              the command that opens login URLs

EXIT CODES:
    0 ok   1 unexpected error   2 usage or config error   3 login required but not
    allowed   4 the provider refused   5 the daemon is unreachable (or not yours)
    6 the login did not complete (timed out or cancelled)
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Header,
    Json,
}

#[derive(Debug)]
pub struct GetArgs {
    pub site: String,
    pub min_ttl: Option<u64>,
    pub scopes: Vec<String>,
    pub format: Format,
    pub no_login: bool,
    /// `--dpop METHOD URL`: also a DPoP proof for that request.
    pub dpop: Option<(String, String)>,
    /// `--dpop-nonce NONCE`: the resource server's nonce for that proof.
    pub dpop_nonce: Option<String>,
    /// `--id-token`: the site's ID token instead of its access token.
    pub id_token: bool,
    /// Asked by `token kube` (the daemon applies the site's `kube_token`).
    pub kube: bool,
}

#[derive(Debug)]
pub enum Command {
    Get(GetArgs),
    Login {
        site: String,
        mode: LoginMode,
    },
    Logout {
        site: String,
    },
    Status {
        site: Option<String>,
        json: bool,
    },
    Exec {
        get: GetArgs,
        var: String,
        argv: Vec<OsString>,
    },
    Kube {
        get: GetArgs,
    },
    Credential {
        action: String,
    },
    Completions {
        shell: String,
    },
    /// The configured site names, one a line (for completion scripts).
    Sites,
    Reload,
    Stop,
    Help,
    Version,
}

fn usage(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Usage(format!("{msg} (see `token --help`)"))
}

fn from_lexopt(e: lexopt::Error) -> ClientError {
    usage(e)
}

pub fn parse(args: Vec<OsString>) -> Result<Command, ClientError> {
    if args.first().is_some_and(|a| a == "exec") {
        return parse_exec(args);
    }
    let mut p = lexopt::Parser::from_args(args);
    let sub = match p.next().map_err(from_lexopt)? {
        Some(Short('h') | Long("help")) | None => return Ok(Command::Help),
        Some(Short('V') | Long("version")) => return Ok(Command::Version),
        Some(Value(v)) => v.string().map_err(from_lexopt)?,
        Some(other) => return Err(usage(other.unexpected())),
    };
    match sub.as_str() {
        "get" => Ok(Command::Get(parse_get(&mut p, "get")?)),
        "kube" => Ok(Command::Kube {
            get: parse_get(&mut p, "kube")?,
        }),
        "login" => parse_login(&mut p),
        "credential" => {
            let action = only_site(&mut p, "credential")?;
            Ok(Command::Credential { action })
        }
        "completions" => Ok(Command::Completions {
            shell: only_site(&mut p, "completions")
                .map_err(|_| usage("`token completions` needs a shell: bash, zsh or fish"))?,
        }),
        "sites" => Ok(Command::Sites),
        "logout" => Ok(Command::Logout {
            site: only_site(&mut p, "logout")?,
        }),
        "status" => parse_status(&mut p),
        "reload" | "stop" => {
            if let Some(arg) = p.next().map_err(from_lexopt)? {
                if matches!(arg, Short('h') | Long("help")) {
                    return Ok(Command::Help);
                }
                return Err(usage(arg.unexpected()));
            }
            Ok(if sub == "reload" {
                Command::Reload
            } else {
                Command::Stop
            })
        }
        "help" => Ok(Command::Help),
        other => Err(usage(format!("unknown command `{other}`"))),
    }
}

fn parse_get(p: &mut lexopt::Parser, cmd: &str) -> Result<GetArgs, ClientError> {
    let mut site = None;
    let mut args = GetArgs {
        site: String::new(),
        min_ttl: None,
        scopes: Vec::new(),
        format: Format::Raw,
        no_login: false,
        dpop: None,
        dpop_nonce: None,
        id_token: false,
        kube: cmd == "kube",
    };
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Long("min-ttl") => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.min_ttl = Some(parse_duration(&v).ok_or_else(|| {
                    usage(format!(
                        "--min-ttl `{v}` is not a duration like 300, 90s, 5m or 1h"
                    ))
                })?);
            }
            Long("scope") => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.scopes.push(v);
            }
            Long("format") if cmd == "get" => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.format = match v.as_str() {
                    "raw" => Format::Raw,
                    "header" => Format::Header,
                    "json" => Format::Json,
                    _ => return Err(usage(format!("--format `{v}`: use raw, header or json"))),
                };
            }
            Long("no-login") => args.no_login = true,
            Long("dpop") if cmd != "kube" => {
                let mut next = |what: &str| -> Result<String, ClientError> {
                    match p.value() {
                        Ok(v) => v.string().map_err(from_lexopt),
                        Err(_) => Err(usage(format!(
                            "--dpop needs a METHOD and a URL (e.g. --dpop GET https://api.example.com/me): the {what} is missing"
                        ))),
                    }
                };
                let method = next("METHOD")?;
                let url = next("URL")?;
                args.dpop = Some((method, url));
            }
            Long("dpop-nonce") if cmd != "kube" => {
                let nonce = p
                    .value()
                    .map_err(|_| {
                        usage(
                            "--dpop-nonce needs the NONCE the server sent in DPoP-Nonce".to_owned(),
                        )
                    })?
                    .string()
                    .map_err(from_lexopt)?;
                args.dpop_nonce = Some(nonce);
            }
            Long("id-token") => args.id_token = true,
            Short('h') | Long("help") => return Err(ClientError::Help),
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(usage(other.unexpected())),
        }
    }
    args.site = site.ok_or_else(|| usage(format!("`token {cmd}` needs a SITE")))?;
    if args.dpop_nonce.is_some() && args.dpop.is_none() {
        return Err(usage(
            "--dpop-nonce goes with --dpop METHOD URL (the proof it is for)".to_owned(),
        ));
    }
    Ok(args)
}

fn parse_exec(args: Vec<OsString>) -> Result<Command, ClientError> {
    let Some(dash) = args.iter().position(|a| a == "--") else {
        return Err(usage(
            "`token exec SITE [--env VAR] -- COMMAND...`: the `--` and COMMAND are missing",
        ));
    };
    let mut before = args;
    let argv = before.split_off(dash + 1);
    before.pop();
    if argv.is_empty() {
        return Err(usage(
            "`token exec SITE -- COMMAND`: the COMMAND is missing",
        ));
    }
    // Pull `--env VAR` out; the rest are `get` options.
    let mut var = "TOKEN".to_owned();
    let mut rest = Vec::new();
    let mut it = before.into_iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--env" {
            let v = it
                .next()
                .ok_or_else(|| usage("--env needs a variable name"))?;
            var = v
                .into_string()
                .map_err(|_| usage("--env VAR must be UTF-8"))?;
            if var.is_empty() || var.contains('=') {
                return Err(usage(format!("--env `{var}` is not a variable name")));
            }
        } else {
            rest.push(a);
        }
    }
    let get = parse_get(&mut lexopt::Parser::from_args(rest), "exec")?;
    Ok(Command::Exec { get, var, argv })
}

fn parse_login(p: &mut lexopt::Parser) -> Result<Command, ClientError> {
    let mut site = None;
    let mut mode = LoginMode::Browser;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Long("device") => mode = LoginMode::Device,
            Long("paste") => mode = LoginMode::Paste,
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(usage(other.unexpected())),
        }
    }
    let site = site.ok_or_else(|| usage("`token login` needs a SITE"))?;
    Ok(Command::Login { site, mode })
}

fn parse_status(p: &mut lexopt::Parser) -> Result<Command, ClientError> {
    let mut site = None;
    let mut json = false;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Long("json") => json = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(Command::Status { site, json })
}

fn only_site(p: &mut lexopt::Parser, cmd: &str) -> Result<String, ClientError> {
    let mut site = None;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(usage(other.unexpected())),
        }
    }
    site.ok_or_else(|| usage(format!("`token {cmd}` needs a SITE")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Command, ClientError> {
        parse(s.split_whitespace().map(OsString::from).collect())
    }

    #[test]
    fn get_with_everything() {
        let Command::Get(g) =
            parse_str("get corp --min-ttl 5m --scope a --scope b --format json --no-login")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(g.site, "corp");
        assert_eq!(g.min_ttl, Some(300));
        assert_eq!(g.scopes, ["a", "b"]);
        assert_eq!(g.format, Format::Json);
        assert!(g.no_login);
        assert!(!g.id_token && !g.kube);
        let Command::Kube { get } = parse_str("kube corp --id-token").unwrap() else {
            panic!()
        };
        assert!(get.id_token && get.kube);
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            "get",
            "get a b",
            "get a --format xml",
            "frobnicate",
            "login",
            "exec a",
        ] {
            let e = parse_str(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn dpop_takes_a_method_and_a_url() {
        let Command::Get(g) =
            parse_str("get corp --dpop GET https://api.example/me --format header").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            g.dpop,
            Some(("GET".to_owned(), "https://api.example/me".to_owned()))
        );
        assert_eq!(g.format, Format::Header);
        let Command::Exec { get, .. } =
            parse_str("exec corp --dpop POST https://a.example/x -- true").unwrap()
        else {
            panic!()
        };
        assert_eq!(get.dpop.unwrap().0, "POST");
        for bad in [
            "get corp --dpop",
            "get corp --dpop GET",
            "kube corp --dpop GET https://a/",
        ] {
            assert_eq!(parse_str(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn exec_splits_at_double_dash() {
        let Command::Exec { get, var, argv } =
            parse_str("exec corp --env GH -- curl -H x").unwrap()
        else {
            panic!()
        };
        assert_eq!(get.site, "corp");
        assert_eq!(var, "GH");
        assert_eq!(argv, ["curl", "-H", "x"]);
    }
}
