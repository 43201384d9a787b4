//! How the commands write the things more than one of them shows: sizes, ids, hex dumps,
//! interrupt indexes and address spaces, one-line ROM summaries, and tables.

use vfio_core::rom::{CodeType, RomReport, Severity};
use vfio_core::{AddressSpace, Error, IrqIndex, Result};

/// A size in bytes as `512K`, `16M`, `8G` (binary units, only when exact; else bytes).
pub fn human_size(n: u64) -> String {
    const UNITS: [(&str, u64); 4] =
        [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, s) in UNITS {
        if n >= s && n % s == 0 {
            return format!("{}{u}", n / s);
        }
    }
    format!("{n}")
}

/// A vendor and device id as `vvvv:dddd` (as lspci writes them).
pub fn id_pair(vendor: u16, device: u16) -> String {
    format!("{vendor:04x}:{device:04x}")
}

/// Parses `VVVV:DDDD` (1 to 4 hex digits each), the inverse of [`id_pair`].
pub fn parse_id_pair(s: &str) -> Result<(u16, u16)> {
    let bad = |reason: &str| Error::Invalid {
        what: "device id",
        input: s.to_string(),
        reason: format!("{reason}; expected VVVV:DDDD in hex, such as 10de:1b80"),
    };
    let (v, d) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let hex = |x: &str| {
        if x.is_empty() || x.len() > 4 {
            return Err(bad(&format!("{x:?} is not 1-4 hex digits")));
        }
        u16::from_str_radix(x, 16).map_err(|_| bad(&format!("{x:?} is not hex")))
    };
    Ok((hex(v)?, hex(d)?))
}

/// A hex dump in the `lspci -x` layout.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut s = String::new();
    let w = if bytes.len() > 256 { 3 } else { 2 };
    for (i, chunk) in bytes.chunks(16).enumerate() {
        s += &format!("{:0w$x}:", i * 16);
        for b in chunk {
            s += &format!(" {b:02x}");
        }
        s.push('\n');
    }
    s
}

/// The usual name of an IRQ index: `INTx`, `MSI`, `MSI-X`, `ERR`, `REQ`.
pub fn irq_name(i: IrqIndex) -> &'static str {
    match i {
        IrqIndex::Intx => "INTx",
        IrqIndex::Msi => "MSI",
        IrqIndex::Msix => "MSI-X",
        IrqIndex::Err => "ERR",
        IrqIndex::Req => "REQ",
    }
}

/// The interface an address space was opened through: `container (Type1v2)`,
/// `container (NoIommu)`, ... or `iommufd`.
pub fn interface_name(space: &AddressSpace) -> String {
    match space {
        AddressSpace::Container(c) => match c.iommu_type() {
            Some(t) => format!("container ({t:?})"),
            None => "container".into(),
        },
        AddressSpace::Ioas(_) => "iommufd".into(),
    }
}

/// A one-line summary of a ROM: size, images and their code types, UEFI capability,
/// and how many problems `rom check` would show.
pub fn rom_summary(r: &RomReport) -> String {
    if r.images.is_empty() || r.images.iter().all(|i| i.pcir.is_none()) {
        return match r.all_problems().next() {
            Some(p) => format!("unusable: {}", p.message),
            None => "no images".into(),
        };
    }
    let kinds: Vec<String> = r
        .images
        .iter()
        .filter_map(|i| i.pcir.as_ref())
        .map(|p| match p.code_type {
            CodeType::X86PcAt => "legacy".to_string(),
            CodeType::Efi => "EFI".to_string(),
            other => other.name().to_string(),
        })
        .collect();
    let errors = r.all_problems().filter(|p| p.severity == Severity::Error).count();
    format!(
        "{} KiB, {} image(s) [{}], {}{}",
        r.total_length / 1024,
        r.images.len(),
        kinds.join(", "),
        if r.verdicts.uefi_capable { "UEFI capable" } else { "not UEFI capable" },
        if errors == 0 {
            String::new()
        } else {
            format!(", {errors} problem(s): run `vfiotool rom check`")
        }
    )
}

/// One column of a [`Table`]: alignment and width.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    right: bool,
    width: usize,
    fit: bool,
}

impl Column {
    /// Left-aligned, padded to at least `width` characters.
    pub const fn left(width: usize) -> Self {
        Column { right: false, width, fit: false }
    }

    /// Right-aligned, padded to at least `width` characters.
    pub const fn right(width: usize) -> Self {
        Column { right: true, width, fit: false }
    }

    /// Widened to the longest entry of the column, when that is longer than the width.
    pub const fn fit(self) -> Self {
        Column { fit: true, ..self }
    }
}

/// A text table: cells separated by one space, each padded to its column's width. The
/// last cell of a row is not padded when it is left-aligned or when the row is shorter
/// than the table (it then runs to the end of the line, as a note over the remaining
/// columns), so no line ends in spaces.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table of these columns, without rows.
    pub fn new(columns: &[Column]) -> Self {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (at most as many cells as columns; fewer ends the row with a note).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    fn padded(&self, row: &[String], i: usize) -> bool {
        let last = i + 1 == row.len();
        !(last && (row.len() < self.columns.len() || !self.columns[i].right))
    }

    /// The table, one line (ending in a newline) per row.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let longest = self
                    .rows
                    .iter()
                    .filter(|r| r.len() > i && self.padded(r, i))
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0);
                if c.fit {
                    c.width.max(longest)
                } else {
                    c.width
                }
            })
            .collect();
        let mut s = String::new();
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| match (self.padded(row, i), self.columns[i].right) {
                    (false, _) => cell.clone(),
                    (true, true) => format!("{cell:>w$}", w = widths[i]),
                    (true, false) => format!("{cell:<w$}", w = widths[i]),
                })
                .collect();
            s += &cells.join(" ");
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ids_and_dumps() {
        assert_eq!(human_size(512 << 10), "512K");
        assert_eq!(human_size(3 << 30), "3G");
        assert_eq!(human_size(1000), "1000");
        assert_eq!(human_size(0), "0");
        assert_eq!(id_pair(0x10de, 0x1b80), "10de:1b80");
        assert_eq!(parse_id_pair("10DE:1b80").unwrap(), (0x10de, 0x1b80));
        for bad in ["10de", "10de:", "12345:1", "zz:1"] {
            let e = parse_id_pair(bad).unwrap_err().to_string();
            assert!(e.contains("expected VVVV:DDDD"), "{bad}: {e}");
        }
        assert_eq!(hexdump(&[0xab; 17]), format!("00:{}\n10: ab\n", " ab".repeat(16)));
        assert!(hexdump(&[0; 257]).ends_with("\n100: 00\n"));
    }

    #[test]
    fn tables_pad_fit_and_end_rows_with_notes() {
        let mut t = Table::new(&[Column::left(4), Column::left(3).fit(), Column::right(5)]);
        t.row(["A", "B", "C"]);
        t.row(["long-name", "wide", "1"]);
        t.row(["x", "note over the rest"]);
        assert_eq!(t.render(), "A    B        C\nlong-name wide     1\nx    note over the rest\n");
        let mut t = Table::new(&[Column::left(3), Column::left(3)]);
        t.row(["a", "b"]);
        assert_eq!(t.render(), "a   b\n", "a left-aligned last cell is not padded");
    }
}
