# node-init's recipes. `pip install rust-just` installs just.

target := "x86_64-unknown-linux-gnu"

# List the recipes.
default:
    @just --list

# Build every crate (debug).
build:
    cargo build --workspace --locked

# Build the fully static release binary and show that it is static.
static:
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p node-init --target {{target}}
    file target/{{target}}/release/node-init
    ldd target/{{target}}/release/node-init 2>&1 | grep -Eq 'statically linked|not a dynamic executable'
    ls -l target/{{target}}/release/node-init

# Run every test tier (installs the system packages the tests need).
test:
    scripts/test-all

# The VM tier alone: the built image boots under QEMU and does the first boot.
e2e: build
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p node-init --target {{target}}
    scripts/e2e

# Formatting and clippy, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Start-up against cloud-init, verify against a serial dig+nc preflight, and
# node-image build against tar -x, cp, tar -c | pigz.
bench:
    scripts/bench
