//! The certified Copy 1 as a PDF (40.97(b)(2)): Step 5A — results, remarks, the certifying
//! scientist's printed name, the date and the electronic signature — written onto the image of
//! Copy 1 as received. Nothing of the received image is covered: page 1 is extended downward by a
//! band that carries Step 5A, so the form stays as legible as it came. A received PDF keeps its
//! pages and objects (its first page's content is wrapped in `q … Q` and the band is added after
//! it); a received PNG or TIFF becomes the image of a new page (first frame of a multi-page
//! TIFF). `lopdf` writes the PDF, `image` decodes the raster formats. Pure: bytes in, bytes out;
//! deterministic for the same input.
//!
//! [`check`] reads a PDF back and confirms it names the specimen and states its results: the
//! guard run on every certified copy before it may travel.

use crate::domain::copy1::{MediaType, Step5a, category_text};
use lopdf::{Dictionary, Document, Object, ObjectId, Stream, dictionary};

/// Why a certified Copy 1 could not be made or checked. Names the problem, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Copy1Error {
    #[error("the image of Copy 1 as received cannot be read as {0}")]
    Unreadable(&'static str),
    #[error("the PDF of Copy 1 as received is encrypted")]
    Encrypted,
    #[error("the PDF of Copy 1 as received has no page")]
    NoPage,
    #[error("the image of Copy 1 as received is larger than 12000 x 12000 pixels")]
    TooManyPixels,
    #[error("the certified Copy 1 could not be written")]
    Write,
    #[error("the certified Copy 1 does not name the specimen ID")]
    SpecimenIdMissing,
    /// Which result it lacks is kept for the caller, not written in the text (error texts
    /// carry no result).
    #[error("the certified Copy 1 does not state every result of the verdict")]
    ResultMissing(&'static str),
}

/// Font size and leading of Step 5A, in points.
const FONT_SIZE: f32 = 8.0;
const LEADING: f32 = 10.5;
const MARGIN: f32 = 18.0;
/// Characters per line of the band (Helvetica at 8 pt across a Letter page).
const LINE_CHARS: usize = 118;
/// The name of the band's font in the page's resources.
const FONT_NAME: &str = "CustodianStep5A";
/// Page width for a raster image (US Letter, points).
const LETTER_WIDTH: f32 = 612.0;
const MAX_PIXELS: u32 = 12_000;

/// Renders the certified Copy 1: Step 5A onto the image as received. Always a PDF.
pub fn render(received: &[u8], media: MediaType, step: &Step5a) -> Result<Vec<u8>, Copy1Error> {
    let lines = wrap(&step.lines());
    let band = MARGIN * 2.0 + LEADING * lines.len() as f32;
    let mut doc = match media {
        MediaType::Pdf => onto_pdf(received, band, &lines)?,
        MediaType::Png | MediaType::Tiff => onto_raster(received, media, band, &lines)?,
    };
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(|_| Copy1Error::Write)?;
    Ok(out)
}

/// Confirms a PDF's first page names `specimen_id` and states each of `results` (as Step 5A
/// words them).
pub fn check(
    pdf: &[u8],
    specimen_id: &str,
    results: &[crate::domain::rules::ResultCategory],
) -> Result<(), Copy1Error> {
    let doc = Document::load_mem(pdf).map_err(|_| Copy1Error::Unreadable("application/pdf"))?;
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let text = doc
        .extract_text(&pages)
        .map_err(|_| Copy1Error::Unreadable("application/pdf"))?;
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !text.contains(&format!("Specimen ID: {}", pdf_text_roundtrip(specimen_id))) {
        return Err(Copy1Error::SpecimenIdMissing);
    }
    for r in results {
        if !text.contains(category_text(*r)) {
            return Err(Copy1Error::ResultMissing(category_text(*r)));
        }
    }
    Ok(())
}

/// Whether a PDF carries any text at all (a scanned form may carry none).
pub fn has_text(pdf: &[u8]) -> bool {
    let Ok(doc) = Document::load_mem(pdf) else {
        return false;
    };
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages).is_ok_and(|t| !t.trim().is_empty())
}

/// A text as it reads back from the PDF (characters outside WinAnsi become `?`).
fn pdf_text_roundtrip(s: &str) -> String {
    s.chars()
        .map(|c| if win_ansi(c).is_some() { c } else { '?' })
        .collect()
}

/// The lines of Step 5A wrapped to the band's width; continuation lines are indented and a word
/// longer than a line is cut.
fn wrap(lines: &[String]) -> Vec<String> {
    const INDENT: &str = "    ";
    let piece = LINE_CHARS - INDENT.len();
    let mut out = Vec::new();
    for line in lines {
        let mut words: Vec<String> = Vec::new();
        for word in line.split(' ') {
            let chars: Vec<char> = word.chars().collect();
            if chars.is_empty() {
                words.push(String::new());
            }
            for chunk in chars.chunks(piece) {
                words.push(chunk.iter().collect());
            }
        }
        let mut current = String::new();
        let mut len = 0;
        for w in words {
            let n = w.chars().count();
            if len > 0 && len + 1 + n > LINE_CHARS {
                out.push(std::mem::replace(&mut current, INDENT.to_string()));
                len = INDENT.len();
            } else if len > 0 {
                current.push(' ');
                len += 1;
            }
            current.push_str(&w);
            len += n;
        }
        out.push(current);
    }
    out
}

/// The WinAnsi byte of a character, for the characters Latin-1 and WinAnsi share.
fn win_ansi(c: char) -> Option<u8> {
    let n = c as u32;
    ((0x20..0x7f).contains(&n) || (0xa0..=0xff).contains(&n)).then_some(n as u8)
}

/// A PDF literal string (WinAnsi; other characters become `?`).
fn literal(s: &str) -> Vec<u8> {
    let mut out = vec![b'('];
    for c in s.chars() {
        let b = win_ansi(c).unwrap_or(b'?');
        if matches!(b, b'(' | b')' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b')');
    out
}

/// The content stream of the band: a white box with a rule above it and the lines of Step 5A,
/// for a page whose band spans `[x0, x1]` horizontally and `[y0, y0 + band]` vertically.
fn band_content(x0: f32, x1: f32, y0: f32, band: f32, lines: &[String]) -> Vec<u8> {
    let mut c = Vec::new();
    let w = x1 - x0;
    c.extend_from_slice(
        format!(
            "q\n1 g\n{x0:.2} {y0:.2} {w:.2} {band:.2} re f\n0 G 0.8 w\n{:.2} {:.2} m {:.2} {:.2} l S\n0 g\nBT\n/{FONT_NAME} {FONT_SIZE} Tf\n{LEADING} TL\n{:.2} {:.2} Td\n",
            x0 + MARGIN / 2.0,
            y0 + band - 2.0,
            x1 - MARGIN / 2.0,
            y0 + band - 2.0,
            x0 + MARGIN,
            y0 + band - MARGIN - FONT_SIZE + 2.0,
        )
        .as_bytes(),
    );
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            c.extend_from_slice(b"T*\n");
        }
        c.extend_from_slice(&literal(line));
        c.extend_from_slice(b" Tj\n");
    }
    c.extend_from_slice(b"ET\nQ\n");
    c
}

fn helvetica(doc: &mut Document) -> ObjectId {
    doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    })
}

/// A page attribute, inherited through the page tree (MediaBox, Resources, CropBox).
fn inherited(doc: &Document, page: ObjectId, key: &[u8]) -> Option<Object> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..32 {
        if let Ok(v) = node.get(key) {
            return match v {
                Object::Reference(id) => doc.get_object(*id).ok().cloned(),
                other => Some(other.clone()),
            };
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = doc.get_dictionary(parent).ok()?;
    }
    None
}

fn rect(o: &Object) -> Option<[f32; 4]> {
    let a = o.as_array().ok()?;
    if a.len() != 4 {
        return None;
    }
    let mut r = [0f32; 4];
    for (i, v) in a.iter().enumerate() {
        r[i] = v.as_float().ok()?;
    }
    Some([
        r[0].min(r[2]),
        r[1].min(r[3]),
        r[0].max(r[2]),
        r[1].max(r[3]),
    ])
}

fn rect_object(r: [f32; 4]) -> Object {
    Object::Array(r.iter().map(|v| Object::Real(*v)).collect())
}

/// Step 5A onto a received PDF: page 1 grows downward by the band.
fn onto_pdf(received: &[u8], band: f32, lines: &[String]) -> Result<Document, Copy1Error> {
    let mut doc =
        Document::load_mem(received).map_err(|_| Copy1Error::Unreadable("application/pdf"))?;
    if doc.is_encrypted() {
        return Err(Copy1Error::Encrypted);
    }
    let page = *doc.get_pages().values().next().ok_or(Copy1Error::NoPage)?;
    let media = inherited(&doc, page, b"MediaBox")
        .as_ref()
        .and_then(rect)
        .unwrap_or([0.0, 0.0, 612.0, 792.0]);
    let grown = [media[0], media[1] - band, media[2], media[3]];
    // Resources: the page's own, or a copy of the inherited ones, so adding the font hides
    // nothing the page's content uses.
    let resources = match inherited(&doc, page, b"Resources") {
        Some(Object::Dictionary(d)) => d,
        _ => Dictionary::new(),
    };
    let font = helvetica(&mut doc);
    let mut resources = resources;
    let mut fonts = match resources.get(b"Font") {
        Ok(Object::Dictionary(d)) => d.clone(),
        Ok(Object::Reference(id)) => doc.get_dictionary(*id).cloned().unwrap_or_default(),
        _ => Dictionary::new(),
    };
    fonts.set(FONT_NAME, Object::Reference(font));
    resources.set("Font", Object::Dictionary(fonts));
    let resources_id = doc.add_object(Object::Dictionary(resources));
    let crop = inherited(&doc, page, b"CropBox").as_ref().and_then(rect);
    let existing: Vec<Object> = match doc.get_dictionary(page).and_then(|p| p.get(b"Contents")) {
        Ok(Object::Array(a)) => a.clone(),
        Ok(Object::Reference(id)) => vec![Object::Reference(*id)],
        _ => Vec::new(),
    };
    let open = doc.add_object(Stream::new(Dictionary::new(), b"q\n".to_vec()));
    let mut close = Stream::new(
        Dictionary::new(),
        [
            b"\nQ\n".to_vec(),
            band_content(grown[0], grown[2], grown[1], band, lines),
        ]
        .concat(),
    );
    let _ = close.compress();
    let close = doc.add_object(close);
    let mut contents = vec![Object::Reference(open)];
    contents.extend(existing);
    contents.push(Object::Reference(close));
    let dict = doc
        .get_dictionary_mut(page)
        .map_err(|_| Copy1Error::NoPage)?;
    dict.set("MediaBox", rect_object(grown));
    if let Some(c) = crop {
        dict.set("CropBox", rect_object([c[0], c[1] - band, c[2], c[3]]));
    }
    dict.set("Resources", Object::Reference(resources_id));
    dict.set("Contents", Object::Array(contents));
    Ok(doc)
}

/// Step 5A under a received PNG or TIFF, on a new Letter-wide page.
fn onto_raster(
    received: &[u8],
    media: MediaType,
    band: f32,
    lines: &[String],
) -> Result<Document, Copy1Error> {
    let format = match media {
        MediaType::Png => image::ImageFormat::Png,
        _ => image::ImageFormat::Tiff,
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(received), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PIXELS);
    limits.max_image_height = Some(MAX_PIXELS);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => Copy1Error::TooManyPixels,
        _ => Copy1Error::Unreadable(media.key()),
    })?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Copy1Error::Unreadable(media.key()));
    }
    let gray = !img.color().has_color();
    let (pixels, space) = if gray {
        (img.into_luma8().into_raw(), "DeviceGray")
    } else {
        (img.into_rgb8().into_raw(), "DeviceRGB")
    };
    let mut doc = Document::with_version("1.7");
    let mut xobject = Stream::new(
        dictionary! {
            "Type" => "XObject",
            "Subtype" => "Image",
            "Width" => i64::from(w),
            "Height" => i64::from(h),
            "ColorSpace" => space,
            "BitsPerComponent" => 8,
        },
        pixels,
    );
    xobject.compress().map_err(|_| Copy1Error::Write)?;
    let image_id = doc.add_object(xobject);
    let font = helvetica(&mut doc);
    let draw_w = LETTER_WIDTH - 2.0 * MARGIN;
    let draw_h = draw_w * h as f32 / w as f32;
    let page_h = draw_h + 2.0 * MARGIN + band;
    let mut content = format!(
        "q\n{draw_w:.2} 0 0 {draw_h:.2} {MARGIN:.2} {:.2} cm\n/Copy1 Do\nQ\n",
        band + MARGIN
    )
    .into_bytes();
    content.extend(band_content(0.0, LETTER_WIDTH, 0.0, band, lines));
    let mut content = Stream::new(Dictionary::new(), content);
    let _ = content.compress();
    let content_id = doc.add_object(content);
    let pages_id = doc.new_object_id();
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "MediaBox" => rect_object([0.0, 0.0, LETTER_WIDTH, page_h]),
        "Resources" => dictionary! {
            "Font" => dictionary! { FONT_NAME => font },
            "XObject" => dictionary! { "Copy1" => image_id },
        },
        "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
        }),
    );
    let catalog = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog);
    Ok(doc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::rules::ResultCategory;

    /// A small valid PNG (gray, 40 x 20), built with the `image` crate.
    pub(crate) fn png() -> Vec<u8> {
        let img =
            image::GrayImage::from_fn(40, 20, |x, y| image::Luma([((x * 5 + y) % 255) as u8]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn tiff() -> Vec<u8> {
        let img = image::RgbImage::from_fn(30, 30, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Tiff,
        )
        .unwrap();
        out
    }

    /// A one-page PDF with its own text, resources inherited from the page tree.
    fn pdf() -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let font = helvetica(&mut doc);
        let pages_id = doc.new_object_id();
        let content = doc.add_object(Stream::new(
            Dictionary::new(),
            b"BT /F1 12 Tf 72 700 Td (FEDERAL DRUG TESTING CUSTODY AND CONTROL FORM) Tj ET 2 w"
                .to_vec(),
        ));
        let page = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content,
        });
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => vec![page.into()],
                "Count" => 1,
                "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
                "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
            }),
        );
        let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog);
        let mut out = Vec::new();
        doc.save_to(&mut out).unwrap();
        out
    }

    fn step() -> Step5a {
        Step5a {
            specimen_id: "X0000001-TEST".into(),
            results: vec![ResultCategory::Positive, ResultCategory::Adulterated],
            dilute: false,
            positive_analytes: vec!["benzoylecgonine".into()],
            remarks: vec![
                "Nitrite 600 mcg/mL (40.93(b)) (remark with parentheses \\ é ✓)".repeat(3),
            ],
            certifying_scientist: "Dr. Robin Certifier".into(),
            date: "2026-12-01".into(),
            report_id: "R-X0000001-TEST-1-0".into(),
            laboratory: "Example Laboratory, 1 Main St".into(),
        }
    }

    #[test]
    fn step_5a_goes_under_a_received_pdf_and_keeps_its_content() {
        let received = pdf();
        let out = render(&received, MediaType::Pdf, &step()).unwrap();
        assert_eq!(MediaType::sniff(&out), Some(MediaType::Pdf));
        check(&out, "X0000001-TEST", &step().results).unwrap();
        let doc = Document::load_mem(&out).unwrap();
        let text = doc.extract_text(&[1]).unwrap();
        assert!(
            text.contains("CUSTODY AND CONTROL FORM"),
            "the form's own text stays"
        );
        assert!(text.contains("Dr. Robin Certifier"));
        assert!(text.contains("report R-X0000001-TEST-1-0"));
        let page = *doc.get_pages().values().next().unwrap();
        let mb = rect(&inherited(&doc, page, b"MediaBox").unwrap()).unwrap();
        assert!(
            mb[1] < 0.0 && mb[3] == 792.0,
            "page 1 grew downward: {mb:?}"
        );
        // The form's own font is still reachable from the page's resources.
        let fonts = doc.get_page_fonts(page).unwrap();
        assert!(fonts.contains_key(b"F1".as_slice()));
        assert!(fonts.contains_key(FONT_NAME.as_bytes()));
        // Deterministic: the same input renders the same bytes.
        assert_eq!(out, render(&received, MediaType::Pdf, &step()).unwrap());
    }

    #[test]
    fn step_5a_goes_under_a_received_png_or_tiff() {
        for (bytes, media) in [(png(), MediaType::Png), (tiff(), MediaType::Tiff)] {
            let out = render(&bytes, media, &step()).unwrap();
            check(&out, "X0000001-TEST", &step().results).unwrap();
            let doc = Document::load_mem(&out).unwrap();
            let page = *doc.get_pages().values().next().unwrap();
            assert_eq!(doc.get_page_images(page).unwrap().len(), 1, "{media:?}");
        }
    }

    #[test]
    fn a_copy_that_does_not_state_the_verdict_fails_the_check() {
        let out = render(&png(), MediaType::Png, &step()).unwrap();
        assert_eq!(
            check(&out, "X0000002-TEST", &step().results),
            Err(Copy1Error::SpecimenIdMissing)
        );
        assert_eq!(
            check(&out, "X0000001-TEST", &[ResultCategory::Substituted]),
            Err(Copy1Error::ResultMissing("SUBSTITUTED"))
        );
        assert_eq!(
            check(b"%PDF-1.4 garbage", "X", &[]),
            Err(Copy1Error::Unreadable("application/pdf"))
        );
    }

    #[test]
    fn unreadable_images_are_named_not_quoted() {
        assert_eq!(
            render(b"\x89PNG\r\n\x1a\nnot really", MediaType::Png, &step()),
            Err(Copy1Error::Unreadable("image/png"))
        );
        assert_eq!(
            render(b"%PDF-1.4\nnot really", MediaType::Pdf, &step()),
            Err(Copy1Error::Unreadable("application/pdf"))
        );
    }

    #[test]
    fn long_lines_wrap_and_literals_escape() {
        let lines = wrap(&[format!("{} {}", "a".repeat(100), "b".repeat(300))]);
        assert!(lines.iter().all(|l| l.chars().count() <= LINE_CHARS));
        assert_eq!(literal("a(b)c\\é✓"), b"(a\\(b\\)c\\\\\xe9?)".to_vec());
    }
}
