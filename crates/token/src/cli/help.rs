//! `token --help`, written from the table: the usage lines, each command with
//! its options and words, then the text no table holds.

use super::table::{self, Cmd, Operand, Opt, Words};

/// Where the text wraps.
const WIDTH: usize = 90;
/// Where a command's text starts, and an option's.
const CMD_COL: usize = 14;
const OPT_COL: usize = 32;

const TOP: &str = "token — print fresh OAuth access tokens, kept fresh by the tokend daemon\n";

const TAIL: &str = "\
EXAMPLES:
    curl -H \"Authorization: Bearer $(token get corp)\" https://api.example.com/me
    curl -H \"$(token get corp --format header)\" https://api.example.com/me
    token exec corp -- terraform plan
    token exec corp --dpop GET https://api.example.com/me -- \\
        sh -c 'curl -H \"Authorization: DPoP $TOKEN\" -H \"DPoP: $DPOP\" https://api.example.com/me'

OTHER TOOLS (helpers installed beside token; a site's `urls` says which it serves):
    git        git config credential.helper token          (git-credential-token)
    docker     {\"credHelpers\": {\"registry.example.com\": \"token\"}} in ~/.docker/config.json
               or podman's, skopeo's auth file              (docker-credential-token)
    cargo      credential-provider = [\"cargo-credential-token\"] on the registry
    kubectl    token kube SITE as the kubeconfig's exec plugin

ENVIRONMENT:
    TOKEND_SOCKET        socket path (default $XDG_RUNTIME_DIR/tokend/tokend.sock)
    TOKEND_CONFIG        config file (default: the platform config dir, tokend/config.toml)
    TOKEND_NO_AUTOSTART  1: never start tokend when none answers
    TOKEND_DAEMON_UID    the uid the daemon at TOKEND_SOCKET runs as, when that is another
                         user on purpose (a [share] socket mounted into a container):
                         only exactly that uid is trusted; implies TOKEND_NO_AUTOSTART
    BROWSER              the command that opens login URLs

EXIT CODES:
    0 ok   1 unexpected error   2 usage or config error   3 login required but not
    allowed   4 the provider refused   5 the daemon is unreachable (or not yours)
    6 the login did not complete (timed out or cancelled)
    exec: COMMAND's own exit; 127 when it is not found, 126 when it cannot run
";

/// The whole help text.
pub fn text() -> String {
    let mut out = format!("{TOP}\nUSAGE:\n");
    for c in table::listed() {
        usage(&mut out, c);
    }
    out.push_str("\nCOMMANDS:\n");
    let mut described: Vec<&str> = Vec::new();
    for c in table::listed() {
        command(&mut out, c, &mut described);
    }
    out.push('\n');
    out.push_str(TAIL);
    out
}

/// `    token get SITE [--min-ttl DUR] ...`, wrapped under the operand.
fn usage(out: &mut String, c: &Cmd) {
    let head = format!("    token {}", c.name);
    let mut units = Vec::new();
    match c.operand {
        Operand::Nothing => {}
        Operand::Site => units.push("SITE".to_owned()),
        Operand::MaybeSite => units.push("[SITE]".to_owned()),
        Operand::Word(w) => units.push(w.names().join("|")),
        Operand::MaybeWord(Words::Commands) => units.push("[COMMAND]".to_owned()),
        Operand::MaybeWord(w) => units.push(format!("[{}]", w.names().join("|"))),
    }
    if c.one_of && !c.opts.is_empty() {
        let alts: Vec<String> = c.opts.iter().map(|o| spelled(o, false)).collect();
        units.push(format!("[{}]", alts.join(" | ")));
    } else {
        for o in c.opts {
            let dots = if o.repeats { "..." } else { "" };
            units.push(format!("[{}]{dots}", spelled(o, false)));
        }
    }
    if !c.tail.is_empty() {
        units.push(c.tail.to_owned());
    }
    let indent = head.chars().count() + 1;
    wrap(
        out,
        &format!("{head} "),
        indent,
        units.iter().map(String::as_str),
    );
}

/// `--format raw|header|json` (usage) or `--format F` (the option's line).
fn spelled(o: &Opt, short: bool) -> String {
    let mut s = format!("--{}", o.name);
    match o.words {
        Some(w) if !short => {
            s.push(' ');
            s.push_str(&w.names().join("|"));
        }
        Some(_) | None => {
            for v in o.values {
                s.push(' ');
                s.push_str(v);
            }
        }
    }
    s
}

/// A command, its new options (those described under an earlier command
/// are not repeated) and the words it takes.
fn command(out: &mut String, c: &Cmd, described: &mut Vec<&'static str>) {
    let head = column(&format!("    {}", c.name), CMD_COL);
    let mut text = units(c.help);
    if let (Operand::Word(_), "") = (c.operand, c.more) {
        introduce(&mut text);
    }
    wrap(out, &head, CMD_COL, text.iter().map(String::as_str));
    if !c.more.is_empty() {
        wrap(
            out,
            &" ".repeat(CMD_COL),
            CMD_COL,
            units(c.more).iter().map(String::as_str),
        );
    }
    for o in c.opts {
        if described.contains(&o.name) {
            continue;
        }
        described.push(o.name);
        let head = column(&format!("                {}", spelled(o, true)), OPT_COL);
        let mut units = units(&format!("{} {}", o.help, o.more));
        if let Some(words) = o.words {
            introduce(&mut units);
            let names = words.names();
            let mut i = 0;
            words.each(|name, help| {
                i += 1;
                let bar = if i < names.len() { " |" } else { "" };
                units.push(format!("{name} ({help}){bar}"));
            });
        }
        wrap(out, &head, OPT_COL, units.iter().map(String::as_str));
    }
    if let Operand::Word(words) = c.operand {
        words.each(|name, help| {
            let head = column(&format!("                {name}"), OPT_COL);
            wrap(out, &head, OPT_COL, units(help).iter().map(String::as_str));
        });
    }
}

/// A colon after a text that the words it names follow, unless it ends a sentence.
fn introduce(units: &mut [String]) {
    if let Some(last) = units.last_mut().filter(|u| !u.ends_with('.')) {
        last.push(':');
    }
}

/// The words of `text`, a `quoted span` kept as one.
fn units(text: &str) -> Vec<String> {
    let mut units: Vec<String> = Vec::new();
    let mut open = false;
    for word in text.split_whitespace() {
        match units.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            Some(_) | None => units.push(word.to_owned()),
        }
        if word.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    units
}

/// `head` padded to `col`, or followed by two spaces when it is longer.
fn column(head: &str, col: usize) -> String {
    let n = head.chars().count();
    if n + 2 > col {
        format!("{head}  ")
    } else {
        format!("{head}{}", " ".repeat(col - n))
    }
}

/// Writes `head` then the units, a space apart, onto lines of at most
/// WIDTH characters; continuation lines start at `indent`. A unit is never
/// broken.
fn wrap<'a>(out: &mut String, head: &str, indent: usize, units: impl Iterator<Item = &'a str>) {
    let mut line = head.to_owned();
    let mut len = line.chars().count();
    let mut after_head = true;
    for u in units {
        let n = u.chars().count();
        if !after_head {
            if len + 1 + n > WIDTH {
                out.push_str(line.trim_end());
                out.push('\n');
                line = " ".repeat(indent);
                len = indent;
            } else {
                line.push(' ');
                len += 1;
            }
        }
        line.push_str(u);
        len += n;
        after_head = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}
