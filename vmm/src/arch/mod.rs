//! Machine layout and boot-time CPU state. Only x86_64 exists today.

pub mod x86_64;
