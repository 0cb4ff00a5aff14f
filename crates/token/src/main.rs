fn main() -> std::process::ExitCode {
    token::main()
}
