//! Command-line parsing (lexopt), by the names in `table`.

mod help;
pub mod table;

use std::ffi::OsString;

use lexopt::prelude::*;
use token_proto::{names, parse_duration, LoginMode, Purpose};

use crate::ClientError;
use table::{Cmd, CmdId, OptId, Words};
pub use table::{Format, Shell};

/// `token --help`.
pub fn help() -> String {
    help::text()
}

#[derive(Clone, Debug)]
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
    /// Asked by `token kube` (the daemon applies the site's `kube_token`)
    /// or the git helper (its `min_ttl` is a built-in margin).
    pub purpose: Option<Purpose>,
    /// Whether a person is at the caller; `None`: a terminal on stdin or
    /// stderr says (`token kube` takes kubectl's `interactive`).
    pub interactive: Option<bool>,
    /// `get --url URL`: `site` is the one the daemon's URL map finds for it.
    pub url: Option<String>,
}

impl GetArgs {
    /// A `get` of `site` as the command line gives it with no options.
    pub fn plain(site: String, purpose: Option<Purpose>) -> GetArgs {
        GetArgs {
            site,
            min_ttl: None,
            scopes: Vec::new(),
            format: Format::Raw,
            no_login: false,
            dpop: None,
            dpop_nonce: None,
            id_token: false,
            purpose,
            interactive: None,
            url: None,
        }
    }
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
    Jwk {
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
        shell: Shell,
    },
    /// The configured site names, one a line (for completion scripts).
    Sites,
    Reload,
    Stop,
    Help,
    Version,
}

/// An argument no parse arm took; a mistyped option gets the closest of
/// `cmd`'s options.
fn unexpected(arg: lexopt::Arg<'_>, cmd: &Cmd) -> ClientError {
    let hint = match &arg {
        Long(name) => names::closest(name, cmd.opts.iter().map(|o| o.name).chain(["help"]))
            .map(|k| format!("; did you mean `--{k}`?")),
        Short(_) | Value(_) => None,
    };
    usage(format!("{}{}", arg.unexpected(), hint.unwrap_or_default()))
}

fn usage(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Usage(format!("{msg} (see `token --help`)"))
}

fn from_lexopt(e: lexopt::Error) -> ClientError {
    usage(e)
}

pub fn parse(args: Vec<OsString>) -> Result<Command, ClientError> {
    let mut p = lexopt::Parser::from_args(args);
    let sub = match p.next().map_err(from_lexopt)? {
        Some(Short('h') | Long("help")) | None => return Ok(Command::Help),
        Some(Short('V') | Long("version")) => return Ok(Command::Version),
        Some(Value(v)) => v.string().map_err(from_lexopt)?,
        Some(other) => return Err(usage(other.unexpected())),
    };
    let Some(cmd) = table::command(&sub) else {
        return Err(usage(match names::closest(&sub, Words::Commands.names()) {
            Some(close) => format!("unknown command `{sub}`; did you mean `{close}`?"),
            None => format!("unknown command `{sub}`"),
        }));
    };
    let p = &mut p;
    match cmd.id {
        CmdId::Get => Ok(Command::Get(parse_get(p, cmd, None)?)),
        CmdId::Kube => Ok(Command::Kube {
            get: parse_get(p, cmd, Some(Purpose::Kube))?,
        }),
        // exec splits its words at `--` itself.
        CmdId::Exec => {
            let rest = p.raw_args().map_err(from_lexopt)?;
            parse_exec(std::iter::once(sub.into()).chain(rest).collect(), cmd)
        }
        CmdId::Login => parse_login(p, cmd),
        CmdId::Status => parse_status(p, cmd),
        CmdId::Logout => Ok(Command::Logout {
            site: only_operand(p, cmd)?.ok_or_else(|| needs(cmd, "a SITE"))?,
        }),
        CmdId::Jwk => Ok(Command::Jwk {
            site: only_operand(p, cmd)?.ok_or_else(|| needs(cmd, "a SITE"))?,
        }),
        // Any action: git asks helpers to ignore the ones they do not know.
        CmdId::Credential => Ok(Command::Credential {
            action: only_operand(p, cmd)?
                .ok_or_else(|| needs(cmd, "an action: get, store or erase"))?,
        }),
        CmdId::Completions => {
            let shell = only_operand(p, cmd)?
                .ok_or_else(|| needs(cmd, &format!("a shell: {}", Words::Shells.or_list())))?;
            match table::SHELLS.iter().find(|w| w.name == shell) {
                Some(w) => Ok(Command::Completions { shell: w.value }),
                None => Err(usage(format!(
                    "no completions for `{shell}`: use {}",
                    Words::Shells.or_list()
                ))),
            }
        }
        CmdId::Sites => none(p, cmd, Command::Sites),
        CmdId::Reload => none(p, cmd, Command::Reload),
        CmdId::Stop => none(p, cmd, Command::Stop),
        // `token help get` is the same text.
        CmdId::Help => Ok(Command::Help),
    }
}

/// "`token CMD` needs WHAT".
fn needs(cmd: &Cmd, what: &str) -> ClientError {
    usage(format!("`token {}` needs {what}", cmd.name))
}

/// A command that takes no arguments (but `--help`).
fn none(p: &mut lexopt::Parser, cmd: &Cmd, done: Command) -> Result<Command, ClientError> {
    match only_operand(p, cmd)? {
        Some(v) => Err(usage(format!("unexpected argument `{v}`"))),
        None => Ok(done),
    }
}

fn parse_get(
    p: &mut lexopt::Parser,
    cmd: &'static Cmd,
    purpose: Option<Purpose>,
) -> Result<GetArgs, ClientError> {
    let mut site = None;
    let mut args = GetArgs::plain(String::new(), purpose);
    while let Some(id) = next_option(p, cmd, &mut site)? {
        match id {
            OptId::MinTtl => {
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
            OptId::Scope => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.scopes.push(v);
            }
            OptId::Format => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.format = match table::FORMATS.iter().find(|w| w.name == v) {
                    Some(w) => w.value,
                    None => {
                        return Err(usage(format!(
                            "--format `{v}`: use {}",
                            Words::Formats.or_list()
                        )))
                    }
                };
            }
            OptId::NoLogin => args.no_login = true,
            OptId::Dpop => {
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
            OptId::DpopNonce => {
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
            OptId::IdToken => args.id_token = true,
            OptId::Url => {
                let url = p
                    .value()
                    .map_err(|_| {
                        usage("--url needs a URL (e.g. --url https://git.example.com/team-a/)")
                    })?
                    .string()
                    .map_err(from_lexopt)?;
                args.url = Some(url);
            }
            // exec takes --env out before; the others are not get's.
            OptId::Env | OptId::Device | OptId::Paste | OptId::Json => {
                return Err(not_taken(cmd, id))
            }
        }
    }
    args.site = match (site, &args.url) {
        (Some(site), None) => site,
        (None, Some(_)) => String::new(),
        (Some(site), Some(url)) => {
            return Err(usage(format!(
                "give SITE or --url, not both (`{site}` and --url {url})"
            )))
        }
        (None, None) => return Err(needs(cmd, "a SITE (or --url URL)")),
    };
    if args.dpop_nonce.is_some() && args.dpop.is_none() {
        return Err(usage(
            "--dpop-nonce goes with --dpop METHOD URL (the proof it is for)".to_owned(),
        ));
    }
    Ok(args)
}

fn parse_exec(args: Vec<OsString>, cmd: &'static Cmd) -> Result<Command, ClientError> {
    // `token exec --help` asks for the help, not for a missing `--`.
    let options = args.iter().take_while(|a| *a != "--");
    if options.into_iter().any(|a| a == "--help" || a == "-h") {
        return Err(ClientError::Help);
    }
    let Some(dash) = args.iter().position(|a| a == "--") else {
        return Err(usage(match command_start(&args, cmd) {
            Some(i) => {
                let (head, command) = args.split_at(i);
                let show = |a: &[OsString]| {
                    a.iter()
                        .map(|w| shell_word(&w.to_string_lossy()))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!(
                    "`token exec SITE [--env VAR] -- COMMAND...`: the `--` before the COMMAND is missing: `token {} -- {}`",
                    show(head),
                    show(command)
                )
            }
            None => "`token exec SITE [--env VAR] -- COMMAND...`: the `--` and COMMAND are missing"
                .to_owned(),
        }));
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
        if is_env(&a, cmd) {
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
    let get = parse_get(&mut lexopt::Parser::from_args(rest), cmd, None)?;
    Ok(Command::Exec { get, var, argv })
}

/// The option `--NAME` that `arg` spells, if `cmd` has it.
fn opt_of(arg: &str, cmd: &Cmd) -> Option<&'static table::Opt> {
    arg.strip_prefix("--").and_then(|name| cmd.opt(name))
}

/// Whether `arg` is exec's `--env`.
fn is_env(arg: &OsString, cmd: &Cmd) -> bool {
    let id = arg.to_str().and_then(|a| opt_of(a, cmd)).map(|o| o.id);
    match id {
        Some(OptId::Env) => true,
        Some(
            OptId::MinTtl
            | OptId::Scope
            | OptId::Format
            | OptId::NoLogin
            | OptId::IdToken
            | OptId::Dpop
            | OptId::DpopNonce
            | OptId::Device
            | OptId::Paste
            | OptId::Json
            | OptId::Url,
        )
        | None => false,
    }
}

/// `word` as a POSIX shell would need it typed: as is when it is plain,
/// else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Where a COMMAND starts in `exec SITE [options] COMMAND...` written
/// without the `--`: the second word that is neither an option nor an
/// option's value.
fn command_start(args: &[OsString], cmd: &Cmd) -> Option<usize> {
    let mut words = 0;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        let values = opt_of(&a, cmd).map_or(0, |o| o.values.len());
        if values == 0 && !a.starts_with('-') {
            words += 1;
            if words == 2 {
                return Some(i);
            }
        }
        i += 1 + values;
    }
    None
}

fn parse_login(p: &mut lexopt::Parser, cmd: &Cmd) -> Result<Command, ClientError> {
    let mut site = None;
    let mut mode = LoginMode::Browser;
    while let Some(id) = next_option(p, cmd, &mut site)? {
        match id {
            OptId::Device => mode = LoginMode::Device,
            OptId::Paste => mode = LoginMode::Paste,
            OptId::MinTtl
            | OptId::Scope
            | OptId::Format
            | OptId::NoLogin
            | OptId::IdToken
            | OptId::Dpop
            | OptId::DpopNonce
            | OptId::Env
            | OptId::Json
            | OptId::Url => return Err(not_taken(cmd, id)),
        }
    }
    let site = site.ok_or_else(|| needs(cmd, "a SITE"))?;
    Ok(Command::Login { site, mode })
}

fn parse_status(p: &mut lexopt::Parser, cmd: &Cmd) -> Result<Command, ClientError> {
    let mut site = None;
    let mut json = false;
    while let Some(id) = next_option(p, cmd, &mut site)? {
        match id {
            OptId::Json => json = true,
            OptId::MinTtl
            | OptId::Scope
            | OptId::Format
            | OptId::NoLogin
            | OptId::IdToken
            | OptId::Dpop
            | OptId::DpopNonce
            | OptId::Env
            | OptId::Device
            | OptId::Paste
            | OptId::Url => return Err(not_taken(cmd, id)),
        }
    }
    Ok(Command::Status { site, json })
}

/// The next option of a command that takes a SITE and options, or None at
/// the end. The first word is the SITE; `--help` asks for the help; an
/// option the command does not have is an error with the closest it has.
fn next_option(
    p: &mut lexopt::Parser,
    cmd: &Cmd,
    site: &mut Option<String>,
) -> Result<Option<OptId>, ClientError> {
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        let id = match &arg {
            Short('h') | Long("help") => return Err(ClientError::Help),
            Long(name) => cmd.opt(name).map(|o| o.id),
            Value(_) if site.is_none() => {
                if let Value(v) = arg {
                    *site = Some(v.string().map_err(from_lexopt)?);
                }
                continue;
            }
            Short(_) | Value(_) => None,
        };
        return match id {
            Some(id) => Ok(Some(id)),
            None => Err(unexpected(arg, cmd)),
        };
    }
    Ok(None)
}

/// An option in `cmd`'s row of the table that its parser does not take:
/// the table and the parser disagree.
fn not_taken(cmd: &Cmd, id: OptId) -> ClientError {
    ClientError::Other(format!(
        "`token {}` lists the option {id:?} but does not parse it",
        cmd.name
    ))
}

/// The one word a command without options takes, if given; `--help`
/// prints the help, as after any command.
fn only_operand(p: &mut lexopt::Parser, cmd: &Cmd) -> Result<Option<String>, ClientError> {
    let mut word = None;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Short('h') | Long("help") => return Err(ClientError::Help),
            Value(v) if word.is_none() => word = Some(v.string().map_err(from_lexopt)?),
            other => return Err(unexpected(other, cmd)),
        }
    }
    Ok(word)
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
        assert!(!g.id_token && g.purpose.is_none());
        let Command::Kube { get } = parse_str("kube corp --id-token").unwrap() else {
            panic!()
        };
        assert!(get.id_token && get.purpose == Some(Purpose::Kube));
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

    fn usage_text(s: &str) -> String {
        let e = parse_str(s).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{s}");
        e.to_string()
    }

    #[test]
    fn mistyped_commands_and_options_get_the_right_spelling() {
        assert!(usage_text("gett corp").contains("did you mean `get`?"));
        assert!(usage_text("get corp --formt json").contains("did you mean `--format`?"));
        assert!(usage_text("status --jsn").contains("did you mean `--json`?"));
        assert!(!usage_text("frobnicate").contains("did you mean"));
    }

    #[test]
    fn exec_without_the_double_dash_says_only_that_it_is_missing() {
        let e = usage_text("exec corp sh -c true");
        assert!(
            e.contains("the `--` before the COMMAND is missing: `token exec corp -- sh -c true`"),
            "{e}"
        );
        let e = usage_text("exec corp --env GH --min-ttl 5m curl x");
        assert!(
            e.contains("`token exec corp --env GH --min-ttl 5m -- curl x`"),
            "{e}"
        );
        let e = parse(
            ["exec", "corp", "sh", "-c", "echo \"$TOKEN\" it's"]
                .map(OsString::from)
                .to_vec(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(r#"`token exec corp -- sh -c 'echo "$TOKEN" it'\''s'`"#),
            "{e}"
        );
        let e = usage_text("exec corp --min-ttl 5m");
        assert!(e.contains("the `--` and COMMAND are missing"), "{e}");
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

    /// Each command takes each of its options from the table, and `--help`.
    #[test]
    fn every_option_in_the_table_parses() {
        for c in table::listed() {
            let mut base = vec![c.name.to_owned()];
            match c.operand {
                table::Operand::Site | table::Operand::MaybeSite => base.push("corp".to_owned()),
                table::Operand::Word(w) | table::Operand::MaybeWord(w) => {
                    base.extend(w.names().first().map(|n| (*n).to_owned()))
                }
                table::Operand::Nothing => {}
            }
            let tail: &[&str] = match c.id {
                CmdId::Exec => &["--", "true"],
                _ => &[],
            };
            let help = [base.clone(), vec!["--help".to_owned()]].concat();
            let e = parse(help.iter().map(OsString::from).collect());
            assert!(
                matches!(e, Ok(Command::Help) | Err(ClientError::Help)),
                "{help:?}"
            );
            for o in c.opts {
                let mut args = base.clone();
                if o.id == OptId::Url {
                    // Instead of SITE.
                    args.truncate(1);
                }
                // An option that goes with another is tried beside it.
                let with: &[&str] = match o.id {
                    OptId::DpopNonce => &["--dpop", "GET", "https://a.example/"],
                    _ => &[],
                };
                args.extend(with.iter().map(|s| (*s).to_owned()));
                args.push(format!("--{}", o.name));
                for _ in o.values {
                    args.push(match (o.words, o.id) {
                        (Some(w), _) => w.names()[0].to_owned(),
                        (None, OptId::MinTtl) => "5m".to_owned(),
                        (None, _) => "X".to_owned(),
                    });
                }
                args.extend(tail.iter().map(|s| (*s).to_owned()));
                let parsed = parse(args.iter().map(OsString::from).collect());
                assert!(parsed.is_ok(), "{args:?}: {:?}", parsed.err());
            }
        }
    }
}
