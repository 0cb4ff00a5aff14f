//! The names the user types, written once: the commands, their options and
//! the words they take (formats, shells, git's actions), each with its help.
//! Parsing, `token --help`, "did you mean" and the three completion scripts
//! all read this table. It is `static` data: looking a name up on the `get`
//! path is a few string comparisons and allocates nothing.

/// What a command is, for the parser's exhaustive matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdId {
    Get,
    Login,
    Logout,
    Jwk,
    Status,
    Exec,
    Kube,
    Credential,
    Completions,
    Reload,
    Stop,
    Help,
    Sites,
}

/// What an option is, for the parser's exhaustive matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptId {
    MinTtl,
    Scope,
    Format,
    NoLogin,
    IdToken,
    Dpop,
    DpopNonce,
    Env,
    Device,
    Paste,
    Json,
    Url,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Header,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A word the user types, with what it means; `value` is what it parses to.
pub struct Word<T: 'static = ()> {
    pub name: &'static str,
    pub help: &'static str,
    pub value: T,
}

/// A set of words an option or a command takes.
#[derive(Clone, Copy, Debug)]
pub enum Words {
    Formats,
    Shells,
    Actions,
    Commands,
}

impl Words {
    /// Calls `f` with each word's name and help, in the table's order.
    pub fn each(self, mut f: impl FnMut(&'static str, &'static str)) {
        match self {
            Words::Formats => FORMATS.iter().for_each(|w| f(w.name, w.help)),
            Words::Shells => SHELLS.iter().for_each(|w| f(w.name, w.help)),
            Words::Actions => ACTIONS.iter().for_each(|w| f(w.name, w.help)),
            Words::Commands => listed().for_each(|c| f(c.name, c.help)),
        }
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        self.each(|n, _| names.push(n));
        names
    }

    /// "a, b or c", for messages.
    pub fn or_list(self) -> String {
        let names = self.names();
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

pub struct Opt {
    pub id: OptId,
    /// Without the dashes.
    pub name: &'static str,
    /// The values that follow it, as HELP names them.
    pub values: &'static [&'static str],
    /// The words its value is one of, if it is.
    pub words: Option<Words>,
    /// Given more than once, it adds up (`[--scope S]...`).
    pub repeats: bool,
    /// One line: completions show it, HELP starts with it.
    pub help: &'static str,
    /// What HELP adds after `help`.
    pub more: &'static str,
}

/// What follows a command's name.
#[derive(Clone, Copy, Debug)]
pub enum Operand {
    Nothing,
    Site,
    MaybeSite,
    /// One of these words.
    Word(Words),
    /// Optionally one of these words.
    MaybeWord(Words),
}

pub struct Cmd {
    pub id: CmdId,
    pub name: &'static str,
    pub operand: Operand,
    pub opts: &'static [&'static Opt],
    /// The options exclude each other (`[--device | --paste]`).
    pub one_of: bool,
    /// What comes after the options in the usage line.
    pub tail: &'static str,
    /// One line: completions show it, HELP starts with it.
    pub help: &'static str,
    /// What HELP adds after `help`.
    pub more: &'static str,
    /// In HELP and the scripts' command list (`sites` is for the scripts).
    pub listed: bool,
}

const fn opt(id: OptId, name: &'static str, help: &'static str) -> Opt {
    Opt {
        id,
        name,
        values: &[],
        words: None,
        repeats: false,
        help,
        more: "",
    }
}

pub static MIN_TTL: Opt = Opt {
    values: &["DUR"],
    ..opt(
        OptId::MinTtl,
        "min-ttl",
        "the token must stay valid this long (300, 90s, 5m, 1h)",
    )
};
pub static SCOPE: Opt = Opt {
    values: &["S"],
    repeats: true,
    ..opt(
        OptId::Scope,
        "scope",
        "a token for a subset of the site's scopes (repeatable)",
    )
};
pub static FORMAT: Opt = Opt {
    values: &["F"],
    words: Some(Words::Formats),
    ..opt(OptId::Format, "format", "how to print the token")
};
pub static NO_LOGIN: Opt = opt(
    OptId::NoLogin,
    "no-login",
    "never start a login: exit 3 instead",
);
pub static ID_TOKEN: Opt = Opt {
    more: "(the site's scopes must include openid)",
    ..opt(
        OptId::IdToken,
        "id-token",
        "the site's validated OpenID Connect ID token instead",
    )
};
pub static DPOP: Opt = Opt {
    values: &["METHOD", "URL"],
    more: "(signed by tokend). raw prints the token on line 1 and the proof on line 2; \
           header prints `Authorization: DPoP ...` and `DPoP: ...`; json adds dpop_proof",
    ..opt(
        OptId::Dpop,
        "dpop",
        "for `dpop = true` sites: also a DPoP proof for that one request",
    )
};
pub static DPOP_NONCE: Opt = Opt {
    values: &["NONCE"],
    more: "(with --dpop; RFC 9449 §9)",
    ..opt(
        OptId::DpopNonce,
        "dpop-nonce",
        "the nonce the resource server sent in its DPoP-Nonce header, for that proof",
    )
};
pub static URL: Opt = Opt {
    values: &["URL"],
    more: "(instead of SITE): the site whose `urls` or `hosts` serve it, by the longest \
           prefix; a URL no site serves exits 2 naming it",
    ..opt(
        OptId::Url,
        "url",
        "the token of the site that serves URL (https://host/path, or host[:port])",
    )
};
pub static ENV: Opt = Opt {
    values: &["VAR"],
    ..opt(
        OptId::Env,
        "env",
        "the variable that holds the token (default TOKEN)",
    )
};
pub static DEVICE: Opt = opt(
    OptId::Device,
    "device",
    "show a code to enter on another device (RFC 8628)",
);
pub static PASTE: Opt = opt(
    OptId::Paste,
    "paste",
    "print the URL, read the final URL (or the code) from stdin",
);
pub static JSON: Opt = opt(OptId::Json, "json", "the same as JSON");

pub static FORMATS: [Word<Format>; 3] = [
    Word {
        name: "raw",
        help: "the token, the default",
        value: Format::Raw,
    },
    Word {
        name: "header",
        help: "`Authorization: Bearer ...`",
        value: Format::Header,
    },
    Word {
        name: "json",
        help: "access_token, token_type, expires_at, scopes, api_key",
        value: Format::Json,
    },
];

pub static SHELLS: [Word<Shell>; 3] = [
    Word {
        name: "bash",
        help: "source <(token completions bash)   (e.g. in ~/.bashrc)",
        value: Shell::Bash,
    },
    Word {
        name: "zsh",
        help: "source <(token completions zsh)",
        value: Shell::Zsh,
    },
    Word {
        name: "fish",
        help: "token completions fish | source",
        value: Shell::Fish,
    },
];

/// git's actions; any other is accepted and ignored, as git asks of helpers.
pub static ACTIONS: [Word; 3] = [
    Word {
        name: "get",
        help: "the token for the remote git describes on stdin",
        value: (),
    },
    Word {
        name: "store",
        help: "nothing: tokend owns the tokens",
        value: (),
    },
    Word {
        name: "erase",
        help: "nothing: the next refresh replaces a refused token",
        value: (),
    },
];

const fn cmd(id: CmdId, name: &'static str, operand: Operand, help: &'static str) -> Cmd {
    Cmd {
        id,
        name,
        operand,
        opts: &[],
        one_of: false,
        tail: "",
        help,
        more: "",
        listed: true,
    }
}

/// The commands in the order HELP and the scripts show them.
pub static COMMANDS: [Cmd; 13] = [
    Cmd {
        opts: &[
            &MIN_TTL,
            &SCOPE,
            &FORMAT,
            &NO_LOGIN,
            &ID_TOKEN,
            &DPOP,
            &DPOP_NONCE,
            &URL,
        ],
        more: "Logs in through your browser first if the site needs consent. Without a \
               terminal (an IDE's background git or kubectl), once a login went unanswered \
               it exits 3 at once instead, for [daemon] login_cooldown (15m), until you run \
               `token login SITE`.",
        ..cmd(
            CmdId::Get,
            "get",
            Operand::Site,
            "Print a valid access token for SITE on stdout and nothing else.",
        )
    },
    Cmd {
        opts: &[&DEVICE, &PASTE],
        one_of: true,
        ..cmd(
            CmdId::Login,
            "login",
            Operand::Site,
            "Run consent for SITE now (in the browser with PKCE, unless told otherwise).",
        )
    },
    cmd(
        CmdId::Logout,
        "logout",
        Operand::Site,
        "Revoke SITE's tokens at the provider where possible; forget them here.",
    ),
    cmd(
        CmdId::Jwk,
        "jwk",
        Operand::Site,
        "Print SITE's public key (private_key_jwt, else DPoP) as a JWK set, to register at the provider.",
    ),
    Cmd {
        opts: &[&JSON],
        ..cmd(
            CmdId::Status,
            "status",
            Operand::MaybeSite,
            "Every site (or one): state, expiry, scopes, last refresh, last error, notes.",
        )
    },
    Cmd {
        opts: &[
            &ENV,
            &MIN_TTL,
            &SCOPE,
            &NO_LOGIN,
            &ID_TOKEN,
            &DPOP,
            &DPOP_NONCE,
        ],
        tail: "-- COMMAND [ARGS]...",
        more: "With --dpop METHOD URL, also the proof for that request in $DPOP; \
               the other options are get's.",
        ..cmd(
            CmdId::Exec,
            "exec",
            Operand::Site,
            "Run COMMAND with the token in $VAR (default TOKEN).",
        )
    },
    Cmd {
        opts: &[&MIN_TTL, &SCOPE, &NO_LOGIN, &ID_TOKEN],
        more: "--id-token (or the site key kube_token = \"id_token\") puts the ID token in it, \
               for clusters that authenticate users with OIDC; the other options are get's.",
        ..cmd(
            CmdId::Kube,
            "kube",
            Operand::Site,
            "Print a Kubernetes ExecCredential (client.authentication.k8s.io/v1).",
        )
    },
    Cmd {
        more: "Set it up with `git config credential.helper token`; the site is the one \
               whose `hosts` or `urls` serve the remote (for `urls` with a path, also \
               `git config credential.https://HOST.useHttpPath true`).",
        ..cmd(
            CmdId::Credential,
            "credential",
            Operand::Word(Words::Actions),
            "The git credential helper (also installed as git-credential-token).",
        )
    },
    cmd(
        CmdId::Completions,
        "completions",
        Operand::Word(Words::Shells),
        "Print a completion script that also completes site names",
    ),
    cmd(
        CmdId::Reload,
        "reload",
        Operand::Nothing,
        "Re-read the config file now (tokend also watches it).",
    ),
    cmd(
        CmdId::Stop,
        "stop",
        Operand::Nothing,
        "Ask the daemon to exit.",
    ),
    cmd(
        CmdId::Help,
        "help",
        Operand::MaybeWord(Words::Commands),
        "Print this text (as does --help after any command).",
    ),
    Cmd {
        listed: false,
        ..cmd(
            CmdId::Sites,
            "sites",
            Operand::Nothing,
            "The configured site names, one a line (for the completion scripts).",
        )
    },
];

/// The commands HELP and the scripts list.
pub fn listed() -> impl Iterator<Item = &'static Cmd> {
    COMMANDS.iter().filter(|c| c.listed)
}

pub fn command(name: &str) -> Option<&'static Cmd> {
    COMMANDS.iter().find(|c| c.name == name)
}

impl Cmd {
    /// The option `--name` of this command.
    pub fn opt(&self, name: &str) -> Option<&'static Opt> {
        self.opts.iter().copied().find(|o| o.name == name)
    }
}
