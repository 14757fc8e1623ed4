"""Answer extraction and checking for boxed-answer math.

`answers_match(pred, truth)` accepts equal values written differently: 0.5, 1/2, \\frac{1}{2}, \\dfrac12,
50\\%, 3\\sqrt{3}/\\pi, 2\\frac{1}{3} (a mixed number), "x = 4", 4^\\circ, \\text{cm} units, tuples such as
(1, \\frac{1}{2}), and thousands separators (1,000). Numbers are compared with a relative tolerance;
anything that does not evaluate falls back to a normalised string comparison.

Expressions are evaluated by a small recursive-descent parser of our own (no eval()).
"""

from __future__ import annotations

import math
import re

_BOXED = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{…} (balanced braces) or \\boxed x; None if there is none."""
    start = max(text.rfind(tag) for tag in _BOXED)
    if start < 0:
        return None
    i = text.index("\\", start) + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] != "{":
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced


def last_number(text: str) -> str | None:
    """The last number in the text (GSM8K-style answers), commas removed."""
    found = re.findall(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+", text)
    return found[-1].replace(",", "") if found else None


# ---- normalisation ------------------------------------------------------------------------------

_DROP = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "\\$")


def normalize(ans: str) -> str:
    s = ans.strip()
    s = re.sub(r"\\(?:text|textbf|textit|mathbf|mathrm|mbox|operatorname)\{([^{}]*)\}", r"\1", s)
    for tok in _DROP:
        s = s.replace(tok, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\circ", "", s)
    s = s.replace("\\%", "").replace("%", "")  # 50% and 50 are the same answer
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 4" -> "4"
    s = s.strip().rstrip(".").strip()
    # trailing unit words after a number: "12 cm", "5 dollars"
    s = re.sub(r"^(-?[\d.,/]+)\s+(?!pi\b)(?:[a-zA-Z]+\s*)+$", r"\1", s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"\(?[A-Ea-e]\)?", s):  # multiple-choice letter
        s = s.strip("()").upper()
    return s


# ---- expression evaluation -------------------------------------------------------------------

_TOKEN = re.compile(r"\\[a-zA-Z]+|\d+\.?\d*|\.\d+|pi|[-+*/^(){}\[\]]|\S")
_OPS = {"\\cdot": "*", "\\times": "*", "\\div": "/"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = [_OPS.get(t, t) for t in _TOKEN.findall(text)]
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> float:
        value = self.expr()
        if self.peek() is not None:
            raise ValueError(f"trailing token {self.peek()!r}")
        return value

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def _starts_atom(self, tok: str | None) -> bool:
        return tok is not None and (
            tok[0].isdigit() or tok[0] == "." or tok in ("(", "{", "\\frac", "\\sqrt", "\\pi", "pi")
        )

    def term(self) -> float:
        value, was_integer = self.unary()
        while True:
            tok = self.peek()
            if tok == "*":
                self.take()
                value *= self.unary()[0]
            elif tok == "/":
                self.take()
                value /= self.unary()[0]
            elif self._starts_atom(tok):
                if was_integer and tok == "\\frac":  # mixed number 2\frac{1}{3}
                    value = value + math.copysign(self.unary()[0], value)
                else:
                    value *= self.unary()[0]
            else:
                return value
            was_integer = False

    def unary(self) -> tuple[float, bool]:
        if self.peek() in ("-", "+"):
            sign = -1.0 if self.take() == "-" else 1.0
            value, is_int = self.unary()
            return sign * value, is_int
        return self.power()

    def power(self) -> tuple[float, bool]:
        base, is_int = self.atom()
        if self.peek() == "^":
            self.take()
            exponent = self.unary()[0] if self.peek() != "{" else self.group()
            if abs(exponent) > 1000:
                raise ValueError("exponent too large")
            return float(base**exponent), False
        return base, is_int

    def group(self) -> float:
        """A braced group, or a single digit/atom as in \\frac12."""
        if self.peek() == "{":
            self.take("{")
            value = self.expr()
            self.take("}")
            return value
        tok = self.peek()
        if tok is not None and tok[0].isdigit():
            self.take()
            if len(tok) > 1:  # \\frac12: one digit per argument
                self.toks.insert(self.i, tok[1:])
            return float(tok[0])
        return self.atom()[0]

    def atom(self) -> tuple[float, bool]:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return float(tok), "." not in tok
        if tok in ("(", "["):
            value = self.expr()
            self.take(")" if tok == "(" else "]")
            return value, False
        if tok == "{":
            value = self.expr()
            self.take("}")
            return value, False
        if tok in ("\\pi", "pi"):
            return math.pi, False
        if tok == "\\frac":
            num = self.group()
            return num / self.group(), False
        if tok == "\\sqrt":
            root = 2.0
            if self.peek() == "[":
                self.take("[")
                root = self.expr()
                self.take("]")
            radicand = self.group()
            if radicand < 0:
                raise ValueError("negative radicand")
            return radicand ** (1.0 / root), False
        raise ValueError(f"unsupported token {tok!r}")


def evaluate(expr: str) -> float | None:
    """Numeric value of a LaTeX-ish arithmetic expression, or None if it is not one."""
    try:
        value = _Parser(expr).parse()
    except (ValueError, ZeroDivisionError, OverflowError, IndexError):
        return None
    return value if math.isfinite(value) else None


def _split_top_level(s: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _scalar_match(a: str, b: str, rel_tol: float) -> bool:
    va, vb = evaluate(a), evaluate(b)
    if va is not None and vb is not None:
        return math.isclose(va, vb, rel_tol=rel_tol, abs_tol=1e-9)
    return re.sub(r"\s+", "", a).lower() == re.sub(r"\s+", "", b).lower()


def answers_match(pred: str | None, truth: str, rel_tol: float = 1e-6) -> bool:
    """True if the predicted answer equals the reference answer (see module doc)."""
    if pred is None:
        return False
    a, b = normalize(pred), normalize(truth)
    if not a:
        return False
    if a == b:
        return True
    # tuples / intervals: same brackets, element-wise equal
    wrapped = re.compile(r"^([(\[]|\\\{)(.*)([)\]]|\\\})$")
    ma, mb = wrapped.match(a), wrapped.match(b)
    if ma and mb and ("," in ma.group(2) or "," in mb.group(2)):
        xs, ys = _split_top_level(ma.group(2)), _split_top_level(mb.group(2))
        return (
            (ma.group(1), ma.group(3)) == (mb.group(1), mb.group(3))
            and len(xs) == len(ys)
            and all(_scalar_match(x, y, rel_tol) for x, y in zip(xs, ys))
        )
    if "," in a and "," in b:  # bare lists "1, 2"
        xs, ys = _split_top_level(a), _split_top_level(b)
        return len(xs) == len(ys) and all(_scalar_match(x, y, rel_tol) for x, y in zip(xs, ys))
    return _scalar_match(a, b, rel_tol)
