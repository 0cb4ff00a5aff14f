//! `token completions bash|zsh|fish`: shell completion scripts that also
//! complete the configured site names, which they get from `token sites`
//! (a scan of the config file: no daemon needed, nothing started). The
//! scripts are written from the names in `cli::table`.

use std::path::Path;

use super::print;
use crate::cli::table::{self, Cmd, Operand, Shell, Words};
use crate::ClientError;

pub fn run(shell: Shell) -> Result<u8, ClientError> {
    print(&script(shell))
}

/// `token sites`: the configured site names, one a line.
pub fn sites() -> Result<u8, ClientError> {
    let names = sites_in(&token_proto::config_path());
    print(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
}

/// Site names in a config file's text: the `[site.NAME]` table headers.
pub fn site_names(config: &str) -> Vec<String> {
    let mut names: Vec<String> = config
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let inner = line.strip_prefix('[')?.split(']').next()?.trim();
            let name = inner.strip_prefix("site.")?.trim().trim_matches('"');
            token_proto::names::is_site_name(name).then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The site names of the config file at `path` (none if it is unreadable).
pub fn sites_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| site_names(&text))
        .unwrap_or_default()
}

/// The completion script for `shell`, written from the table.
pub fn script(shell: Shell) -> String {
    match shell {
        Shell::Bash => bash(),
        Shell::Zsh => zsh(),
        Shell::Fish => fish(),
    }
}

/// What the scripts run for the configured site names.
const SITES: &str = "token sites 2>/dev/null";

fn commands() -> String {
    Words::Commands.names().join(" ")
}

/// The options each listed command takes, as `--name` words.
fn options(c: &Cmd) -> String {
    let dashed: Vec<String> = c.opts.iter().map(|o| format!("--{}", o.name)).collect();
    dashed.join(" ")
}

/// Every option of every command once, in the table's order.
fn all_options() -> Vec<&'static table::Opt> {
    let mut all: Vec<&'static table::Opt> = Vec::new();
    for c in table::listed() {
        for o in c.opts {
            if !all.iter().any(|a| a.name == o.name) {
                all.push(o);
            }
        }
    }
    all
}

/// The options that take free values (not words), `--a|--b`, and those
/// that take a second one.
fn value_options() -> (String, String) {
    let all = all_options();
    let pick = |n: usize| {
        all.iter()
            .filter(|o| o.words.is_none() && o.values.len() >= n)
            .map(|o| format!("--{}", o.name))
            .collect::<Vec<_>>()
            .join("|")
    };
    (pick(1), pick(2))
}

/// The words a command's operand completes to, as the shell gets them:
/// the site names from `token sites`, or the table's words.
enum Operands {
    Sites,
    Words(String),
    Nothing,
}

fn operands(c: &Cmd) -> Operands {
    match c.operand {
        Operand::Site | Operand::MaybeSite => Operands::Sites,
        Operand::Word(w) | Operand::MaybeWord(w) => Operands::Words(w.names().join(" ")),
        Operand::Nothing => Operands::Nothing,
    }
}

/// How bash and zsh spell the `case` blocks both scripts have.
struct Dialect {
    /// The word before the cursor, and the one before that.
    prev: &'static str,
    prev2: &'static str,
    /// Offers words (then the arm returns).
    offer: fn(&str) -> String,
    /// Empties what the arms set.
    reset: &'static str,
    /// The command's word.
    command: &'static str,
    /// An arm's settings from a command's options and operands.
    arm: fn(&str, &Operands) -> String,
}

/// The value completion of the options, then an arm per command.
fn cases(d: &Dialect) -> String {
    let (one, two) = value_options();
    let mut s = format!("    case {} in\n", d.prev);
    for o in all_options() {
        if let Some(w) = o.words {
            let offer = (d.offer)(&w.names().join(" "));
            s.push_str(&format!("        --{}) {offer}; return ;;\n", o.name));
        }
    }
    s.push_str(&format!("        {one}) return ;;\n    esac\n"));
    if !two.is_empty() {
        s.push_str(&format!(
            "    case {} in\n        {two}) return ;;\n    esac\n",
            d.prev2
        ));
    }
    s.push_str(&format!("{}    case {} in\n", d.reset, d.command));
    for c in table::listed() {
        let arm = (d.arm)(&options(c), &operands(c));
        s.push_str(&format!("        {}) {arm} ;;\n", c.name));
    }
    s.push_str("    esac\n");
    s
}

const BASH: Dialect = Dialect {
    prev: "\"$prev\"",
    prev2: "\"${COMP_WORDS[COMP_CWORD-2]}\"",
    offer: |w| format!("COMPREPLY=($(compgen -W \"{w}\" -- \"$cur\"))"),
    reset: "    opts=\"\" words=\"\"\n",
    command: "\"$cmd\"",
    arm: |opts, operands| match operands {
        Operands::Sites => format!("opts=\"{opts}\"; words=\"$({SITES})\""),
        Operands::Words(w) => format!("opts=\"{opts}\"; words=\"{w}\""),
        Operands::Nothing => format!("opts=\"{opts}\""),
    },
};

const ZSH: Dialect = Dialect {
    prev: "$words[CURRENT-1]",
    prev2: "$words[CURRENT-2]",
    offer: |w| format!("compadd -- {w}"),
    reset: "",
    command: "$words[2]",
    arm: |opts, operands| match operands {
        Operands::Sites => format!("opts=({opts}); choices=(${{(f)\"$({SITES})\"}})"),
        Operands::Words(w) => format!("opts=({opts}); choices=({w})"),
        Operands::Nothing => format!("opts=({opts})"),
    },
};

fn bash() -> String {
    format!(
        r#"# token completion for bash: source <(token completions bash)
_token() {{
    local cur prev cmd opts words
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd="${{COMP_WORDS[1]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{}" -- "$cur"))
        return
    fi
{}    if [[ "$cur" == -* ]]; then words="$opts"; fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _token token
"#,
        commands(),
        cases(&BASH)
    )
}

fn zsh() -> String {
    format!(
        r#"#compdef token
# token completion for zsh: source <(token completions zsh), or save as _token on $fpath
_token() {{
    local -a cmds opts choices
    cmds=({})
    if (( CURRENT == 2 )); then
        compadd -a cmds
        return
    fi
{}    if [[ $words[CURRENT] == -* ]]; then
        compadd -- $opts
    else
        compadd -- $choices
    fi
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _token "$@"
else
    compdef _token token
fi
"#,
        commands(),
        cases(&ZSH)
    )
}

/// `text` in fish's single quotes.
fn fish_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn fish() -> String {
    let mut s = String::from(
        r#"# token completion for fish: token completions fish | source
function __token_command --description 'whether the command on the line is one of the arguments'
    set -l words (commandline -opc)
    test (count $words) -ge 2; and contains -- $words[2] $argv
end
complete -c token -f
"#,
    );
    for c in table::listed() {
        s.push_str(&format!(
            "complete -c token -n __fish_use_subcommand -a {} -d {}\n",
            c.name,
            fish_quoted(c.help)
        ));
    }
    for c in table::listed() {
        match operands(c) {
            Operands::Sites => s.push_str(&format!(
                "complete -c token -n '__token_command {}' -a '({SITES})'\n",
                c.name
            )),
            Operands::Words(w) => s.push_str(&format!(
                "complete -c token -n '__token_command {}' -a '{w}'\n",
                c.name
            )),
            Operands::Nothing => {}
        }
    }
    for o in all_options() {
        let cmds: Vec<&str> = table::listed()
            .filter(|c| c.opts.iter().any(|x| x.name == o.name))
            .map(|c| c.name)
            .collect();
        let mut line = format!(
            "complete -c token -n '__token_command {}' -l {}",
            cmds.join(" "),
            o.name
        );
        if !o.values.is_empty() {
            line.push_str(" -x");
        }
        if let Some(w) = o.words {
            line.push_str(&format!(" -a '{}'", w.names().join(" ")));
        }
        line.push_str(&format!(" -d {}\n", fish_quoted(o.help)));
        s.push_str(&line);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn site_names_come_from_table_headers() {
        let text = "[site.corp]\nissuer = \"x\"\n\n  [site.\"gh-1\"] # note\n[site.corp]\n[daemon]\n[site.bad name]\n[other.x]\n";
        assert_eq!(site_names(text), ["corp", "gh-1"]);
    }

    #[test]
    fn scripts_for_three_shells() {
        for w in &table::SHELLS {
            assert!(script(w.value).contains("token sites"), "{}", w.name);
        }
    }

    /// Each command `token --help`'s USAGE shows, with the `--options` it lists.
    fn usage_options() -> Vec<(String, Vec<String>)> {
        let help = crate::cli::help();
        let usage = help
            .split("\n\n")
            .find(|p| p.starts_with("USAGE:"))
            .unwrap();
        let words = |entry: &str| -> Vec<String> {
            entry
                .split(|c: char| c.is_whitespace() || "[]|".contains(c))
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        usage
            .split("\n    token ")
            .skip(1)
            .map(|entry| {
                let w = words(entry);
                let opts = w[1..].iter().filter(|o| o.starts_with("--") && o.len() > 2);
                (w[0].clone(), opts.cloned().collect())
            })
            .collect()
    }

    /// The `--options` a script's arm for `cmd` offers (bash and zsh).
    fn arm_options(script: &str, cmd: &str, open: &str, close: char) -> Vec<String> {
        let arm = format!("        {cmd}) opts={open}");
        script
            .lines()
            .find_map(|l| l.strip_prefix(&arm))
            .and_then(|rest| rest.split(close).next())
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The `--options` fish completes after `cmd`.
    fn fish_options(script: &str, cmd: &str) -> Vec<String> {
        script
            .lines()
            .filter_map(|l| {
                let cond = l.split("-n '__token_command ").nth(1)?.split('\'').next()?;
                let name = l.split(" -l ").nth(1)?.split_whitespace().next()?;
                cond.split_whitespace()
                    .any(|c| c == cmd)
                    .then(|| format!("--{name}"))
            })
            .collect()
    }

    #[test]
    fn every_option_help_lists_completes_in_each_shell() {
        let usage = usage_options();
        let listed: Vec<&str> = usage.iter().map(|(c, _)| c.as_str()).collect();
        assert!(
            listed.contains(&"get") && listed.contains(&"exec"),
            "{listed:?}"
        );
        let dpop = usage
            .iter()
            .find(|(c, _)| c == "get")
            .map(|(_, o)| o.clone());
        assert!(dpop.is_some_and(|o| o.contains(&"--dpop".to_owned())));
        let bash = script(Shell::Bash);
        let zsh = script(Shell::Zsh);
        let fish = script(Shell::Fish);
        for (cmd, opts) in &usage {
            let offered = [
                ("bash", arm_options(&bash, cmd, "\"", '"')),
                ("zsh", arm_options(&zsh, cmd, "(", ')')),
                ("fish", fish_options(&fish, cmd)),
            ];
            for opt in opts {
                for (shell, offered) in &offered {
                    assert!(
                        offered.contains(opt),
                        "{shell} does not complete `token {cmd} {opt}`: {offered:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_command_help_lists_completes_in_each_shell() {
        for (cmd, _) in usage_options() {
            assert!(
                script(Shell::Bash).contains(&format!(" {cmd}")),
                "bash: {cmd}"
            );
            assert!(
                script(Shell::Zsh).contains(&format!(" {cmd}")),
                "zsh: {cmd}"
            );
            assert!(
                script(Shell::Fish).contains(&format!("__fish_use_subcommand -a {cmd} ")),
                "fish: {cmd}"
            );
        }
    }

    #[test]
    fn fish_descriptions_are_quoted() {
        assert_eq!(fish_quoted("the site's \\"), "'the site\\'s \\\\'");
    }
}
