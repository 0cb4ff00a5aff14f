fn main() -> std::process::ExitCode {
    tokend::main()
}
