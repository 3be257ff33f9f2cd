//! The fuzz input read as a stream of bytes, shared by the targets that
//! drive state machines (`#[path]`-included: cargo-fuzz builds one binary
//! per target). Reads past the end give nothing (`None`) or zeros
//! (`*_or0`), never a panic.

pub struct Input<'a>(pub &'a [u8]);

#[allow(dead_code)] // each target uses some of these
impl<'a> Input<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub fn byte_or0(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    /// Little-endian; `None` unless two bytes are left.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    /// Little-endian; `None` unless four bytes are left.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) | u32::from(self.u16()?) << 16)
    }
    /// Little-endian, missing bytes read as zeros.
    pub fn u32_or0(&mut self) -> u32 {
        u32::from_le_bytes([
            self.byte_or0(),
            self.byte_or0(),
            self.byte_or0(),
            self.byte_or0(),
        ])
    }
    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}
