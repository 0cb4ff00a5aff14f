#![cfg_attr(all(target_os = "linux", target_env = "gnu"), no_main)]
token::entry!(token::main);
