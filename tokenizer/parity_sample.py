"""The built-in parity sample: text on which `Encoder` compares fastokens' ids with HF `tokenizers`'
before it trusts fastokens (tokenizer/encode.py). It is Python strings, so it ships with the package
without package data, and it is written here for the purpose (no text from the test corpus, whose
licences do not allow shipping it).

It covers what a byte-level BPE with a regular-expression split can get wrong: scripts (Latin with
accents and combining marks, Cyrillic, Greek, Chinese, Japanese kana, Korean, Arabic, Hebrew,
Devanagari, Thai), emoji with modifiers and joiners, digits and long digit runs, runs of spaces, tabs,
line breaks of every kind, the Unicode spaces, control characters, long runs of one character, code,
and a sweep over the code points. `documents(special)` adds the text of each special token, alone,
doubled, inside words, cut short and in other case, so the check also covers the splitting of
special tokens as text.
"""

from __future__ import annotations

SCRIPTS = (
    "The quick brown fox jumps over the lazy dog. Don't stop; it's 12:30 and we're LATE!",
    "Ça coûte 3,50 € à l'épicerie — déjà vu, naïve façade. Straße, Größe, Ærøskøbing, İstanbul, ŁÓDŹ.",
    "Tiếng Việt có dấu: người, được, những. Combining: e\u0301 a\u0300 o\u0308 n\u0303 (decomposed).",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. ВСЕ ЗАГЛАВНЫЕ, все строчные.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Україна, Беларусь, Српски, Македонски.",
    "今天天气很好，我们去公园散步吧。中华人民共和国成立于1949年10月1日。《红楼梦》是一部小说。",
    "繁體中文：臺灣的語言與文化。標點符號「引號」、『書名』……——。",
    "ひらがなとカタカナ：こんにちは、コンピューター。東京都渋谷区で会いましょう。ｶﾀｶﾅ半角。",
    "한국어 문장입니다. 안녕하세요, 반갑습니다! 서울특별시 2024년.",
    "العربية: مرحبا بكم في المدينة. الأرقام ١٢٣٤٥٦٧٨٩٠ والتشكيل: كَتَبَ الوَلَدُ الدَّرْسَ.",
    "עברית: שלום עולם, מה שלומך? \u200fטקסט מימין לשמאל\u200e mixed.",
    "हिन्दी: नमस्ते दुनिया, आज का दिन अच्छा है। संयुक्ताक्षर: क्ष त्र ज्ञ श्र। अंक: ०१२३४५६७८९",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ สวัสดีครับ",
    "Emoji: 😀😃😄 👍🏽👍🏿 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵🇨🇳 ❤️ ✔︎ 🧑🏻‍💻 and text after 🎉🎉🎉",
    "Mixed: English中文にほんごРусский العربية हिन्दी😀123abc ΑΒΓ",
)

DIGITS = (
    "0 1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890",
    "3.14159265358979323846264338327950288419716939937510 and -0.000001e-10, 1,000,000.00",
    "2024年12月31日 23:59:59 +08:00, ISO 2024-12-31T23:59:59Z, tel. +1 (555) 010-9999",
    "9" * 257,
    " " + "1234567890" * 40,
    "x1y22z333w4444v55555 a1b2c3 v2.0.1-rc.3 0x7fffffff 0b1010 1e9 ½ ¾ ² ³ ① Ⅻ",
)

WHITESPACE = (
    "one  two   three    four     five      six",
    " " * 64 + "indented" + " " * 33 + "\n" + " " * 17,
    "\t\ttab\tseparated\t\tvalues\t\n\t\t\t",
    "windows\r\nline\r\nbreaks\r\n\r\n\r\nend\rold mac\r",
    "\n\n\n\nparagraphs\n\n\n \n \n  \n\t\n",
    "unicode spaces:\u00a0nbsp\u2000en\u2001em\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009thin\u200ahair"
    "\u202fnnbsp\u205fmmsp\u3000ideographic\u1680ogham end",
    "separators:\u2028line\u2029paragraph\u0085nel\u000bvt\u000cff zero width:\u200b\u200c\u200d\ufeffbom",
    " leading space and trailing space ",
    "   ",
    "\n",
    "",
)

CONTROL = (
    "".join(chr(c) for c in range(0, 32)) + "\x7f",
    "nul\x00in\x00text, bell\x07, escape\x1b[31mred\x1b[0m, backspace\x08x",
    "".join(chr(c) for c in range(0x80, 0xA0)),
    "replacement \ufffd, noncharacters \ufdd0\uffff\U0010fffe\U0010ffff, private use \ue000\U000f0000",
    "variation selectors \ufe00\ufe0f\U000e0100, tags \U000e0041\U000e007f, bidi \u202a\u202b\u202c\u202d\u202e",
)

CODE = (
    "def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:\n"
    "    \"\"\"Docstring.\"\"\"\n"
    "    if not texts:\n"
    "        return np.zeros(0), np.zeros(1)  # nothing\n"
    "    return {k: v ** 2 for k, v in zip(a, b) if v != None}\n",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n"
    "\t\tprintf(\"%s\\n\", argv[i]);\n\t}\n\treturn 0;\n}\n",
    "<html><head><meta charset=\"utf-8\"><title>x &amp; y</title></head><body><p class='a'>Hi</p></body></html>",
    '{"id": 12, "text": "caf\\u00e9", "tags": ["a", "b"], "nested": {"x": null, "y": true, "z": -1.5e-3}}',
    "SELECT id, COUNT(*) AS n FROM docs WHERE lang = 'en' GROUP BY id HAVING n > 1; -- comment",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
    "$ ls -la | grep -E '^d' && echo \"done\" || exit 1  # shell; ~/path/to/file.txt C:\\Windows\\System32",
    "https://example.org/path?query=1&b=%20x#frag user@example.com @handle #hashtag",
    "a<b>c<<d>>e <|not|a|token|> <|> <||> |> <| <|endoftext|> <s></s> [CLS] [SEP] <unk>",
)

LONG_RUNS = (
    "a" * 3000,
    "=" * 2000 + "\n" + "-" * 2000,
    "ab" * 1500,
    "中" * 1500,
    "😀" * 600,
    ". " * 1000,
    "\u00a0" * 500,
)


def code_point_sweep(step: int = 97, line: int = 64) -> tuple[str, ...]:
    """Every `step`-th Unicode scalar value (no surrogates: they are not valid in UTF-8 text), in
    lines of `line` characters."""
    chars = [chr(c) for c in range(0, 0x110000, step) if not 0xD800 <= c <= 0xDFFF]
    return tuple("".join(chars[i:i + line]) for i in range(0, len(chars), line))


def special_token_texts(special: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Each special token's text alone, twice over, inside and between words, at line starts, cut
    short and in upper case, and all of them together."""
    out = []
    for token in special:
        out += [token, token + token, f"word{token}word", f" {token} ", f"\n{token}\n", f"text {token}",
                f"{token}text", token[:-1], token[1:], token.upper(), f"中文{token}中文", f"1{token}2"]
    out.append("".join(special) + " " + " ".join(special))
    return tuple(out)


def documents(special: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The sample: the fixed texts, the code point sweep and the special tokens' texts."""
    return [*SCRIPTS, *DIGITS, *WHITESPACE, *CONTROL, *CODE, *LONG_RUNS, *code_point_sweep(),
            *special_token_texts(special)]
