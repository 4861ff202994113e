//! End-to-end tests: each starts the real server on a random port with its own
//! temporary data directory and speaks HTTP to it. One test binary, so it links once.
mod accounts;
mod attribution;
mod bad_input;
mod browser;
mod cluster;
mod counting;
mod crash_loop;
mod delivery;
mod durability;
mod email;
mod hardening;
mod insights;
mod reach;
mod reports;
mod session;
mod support;
mod trust;
mod web;
mod webdriver;
