fn main() {
    restore_sigpipe();
    std::process::exit(loratool::cli::run());
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`loratool info x | head`) would panic
/// in `println!`; a command-line tool should end quietly there, as `cat` does.
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
