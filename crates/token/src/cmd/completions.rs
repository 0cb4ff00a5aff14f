//! `token completions bash|zsh|fish`: shell completion scripts that also
//! complete the configured site names, which they get from `token sites`
//! (a scan of the config file: no daemon needed, nothing started).

use std::path::Path;

use super::print;
use crate::ClientError;

pub fn run(shell: &str) -> Result<u8, ClientError> {
    match script(shell) {
        Some(script) => print(script),
        None => Err(ClientError::Usage(format!(
            "no completions for `{shell}`: use bash, zsh or fish"
        ))),
    }
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

pub fn script(shell: &str) -> Option<&'static str> {
    match shell {
        "bash" => Some(BASH),
        "zsh" => Some(ZSH),
        "fish" => Some(FISH),
        _ => None,
    }
}

const BASH: &str = r#"# token completion for bash: source <(token completions bash)
_token() {
    local cur prev cmd opts
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd="${COMP_WORDS[1]}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "get login logout status exec kube credential completions reload stop help" -- "$cur"))
        return
    fi
    case "$cmd" in
        get|login|logout|status|exec|kube)
            case "$prev" in
                --format) COMPREPLY=($(compgen -W "raw header json" -- "$cur")); return ;;
                --min-ttl|--scope|--env) return ;;
            esac
            if [[ "$cur" == -* ]]; then
                case "$cmd" in
                    get) opts="--min-ttl --scope --format --no-login --id-token" ;;
                    login) opts="--device --paste" ;;
                    status) opts="--json" ;;
                    exec) opts="--env --min-ttl --scope --no-login --id-token" ;;
                    kube) opts="--min-ttl --scope --no-login --id-token" ;;
                    *) opts="" ;;
                esac
                COMPREPLY=($(compgen -W "$opts" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "$(token sites 2>/dev/null)" -- "$cur"))
            fi
            ;;
        credential) COMPREPLY=($(compgen -W "get store erase" -- "$cur")) ;;
        completions) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
    esac
}
complete -F _token token
"#;

const ZSH: &str = r#"#compdef token
# token completion for zsh: source <(token completions zsh), or save as _token on $fpath
_token() {
    local -a cmds
    cmds=(get login logout status exec kube credential completions reload stop help)
    if (( CURRENT == 2 )); then
        compadd -a cmds
        return
    fi
    case $words[2] in
        get|login|logout|status|exec|kube)
            if [[ $words[CURRENT-1] == --format ]]; then
                compadd raw header json
            elif [[ $words[CURRENT] == -* ]]; then
                case $words[2] in
                    get) compadd -- --min-ttl --scope --format --no-login --id-token ;;
                    login) compadd -- --device --paste ;;
                    status) compadd -- --json ;;
                    exec) compadd -- --env --min-ttl --scope --no-login --id-token ;;
                    kube) compadd -- --min-ttl --scope --no-login --id-token ;;
                esac
            else
                compadd -- ${(f)"$(token sites 2>/dev/null)"}
            fi
            ;;
        credential) compadd get store erase ;;
        completions) compadd bash zsh fish ;;
    esac
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _token "$@"
else
    compdef _token token
fi
"#;

const FISH: &str = r#"# token completion for fish: token completions fish | source
complete -c token -f
complete -c token -n __fish_use_subcommand -a 'get login logout status exec kube credential completions reload stop help'
complete -c token -n '__fish_seen_subcommand_from get login logout status exec kube' -a '(token sites 2>/dev/null)'
complete -c token -n '__fish_seen_subcommand_from get exec kube' -l min-ttl -r -d 'the token must stay valid this long'
complete -c token -n '__fish_seen_subcommand_from get exec kube' -l scope -r -d 'a subset of the site scopes'
complete -c token -n '__fish_seen_subcommand_from get' -l format -r -a 'raw header json'
complete -c token -n '__fish_seen_subcommand_from get exec kube' -l no-login -d 'never start a login'
complete -c token -n '__fish_seen_subcommand_from get exec kube' -l id-token -d 'the validated OIDC ID token'
complete -c token -n '__fish_seen_subcommand_from login' -l device -d 'device code on another device'
complete -c token -n '__fish_seen_subcommand_from login' -l paste -d 'paste the final URL back'
complete -c token -n '__fish_seen_subcommand_from status' -l json
complete -c token -n '__fish_seen_subcommand_from exec' -l env -r
complete -c token -n '__fish_seen_subcommand_from credential' -a 'get store erase'
complete -c token -n '__fish_seen_subcommand_from completions' -a 'bash zsh fish'
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_come_from_table_headers() {
        let text = "[site.corp]\nissuer = \"x\"\n\n  [site.\"gh-1\"] # note\n[site.corp]\n[daemon]\n[site.bad name]\n[other.x]\n";
        assert_eq!(site_names(text), ["corp", "gh-1"]);
    }

    #[test]
    fn scripts_for_three_shells() {
        for shell in ["bash", "zsh", "fish"] {
            assert!(script(shell).is_some_and(|s| s.contains("token sites")));
        }
        assert!(script("tcsh").is_none());
    }
}
