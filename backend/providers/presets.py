"""Provider kinds as data: vendors that share a wire protocol differ only in these values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    kind: str
    label: str
    protocol: str  # the adapter that speaks this kind's wire format
    base_url: str
    needs_key: bool
    default_model: str


PRESETS: dict[str, Preset] = {
    p.kind: p
    for p in [
        Preset("openai", "OpenAI", "chat_completions", "https://api.openai.com/v1", True, "gpt-4o-mini"),
        Preset("mistral", "Mistral", "chat_completions", "https://api.mistral.ai/v1", True, "mistral-small-latest"),
        Preset("deepseek", "DeepSeek", "chat_completions", "https://api.deepseek.com", True, "deepseek-chat"),
        Preset("lmstudio", "LM Studio", "chat_completions", "http://localhost:1234/v1", False, "local-model"),
        Preset("ollama", "Ollama", "ollama", "http://localhost:11434", False, "llama3.2"),
        Preset("anthropic", "Anthropic", "anthropic", "https://api.anthropic.com", True, "claude-haiku-4-5"),
        Preset(
            "gemini",
            "Google Gemini",
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta",
            True,
            "gemini-2.5-flash",
        ),
        Preset("kb", "Help articles (no model)", "kb", "kb://", False, "best-passage"),
    ]
}

KIND_CHOICES = [(p.kind, p.label) for p in PRESETS.values()]


def get_preset(kind: str) -> Preset:
    try:
        return PRESETS[kind]
    except KeyError:
        known = ", ".join(PRESETS)
        raise ValueError(f"unknown provider kind {kind!r} (choose one of: {known})") from None
