"""The request and response bodies of the HTTP API (pydantic models: they validate requests and are the
OpenAPI document's schemas, so the two cannot disagree).

Requests are strict: a string where a number belongs, 5.0 for an integer or an unknown field is a 400,
not a guess. The OpenAI fields this server has no use for are accepted only at their neutral values."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class CompletionRequest(_Strict):
    model: str | None = Field(None, description="A name from GET /v1/models (default: the first model).")
    prompt: str | list[str] = Field("", description="The prime: generation continues it. A list asks for "
                                    "several prompts at once (choice index = prompt index * n + j).")
    max_tokens: int | None = Field(None, ge=1, description="Characters to generate per choice "
                                   "(a token is one character); default and cap: the server's --max-length.")
    temperature: float = Field(1.0, ge=0, le=100, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="Keep the k likeliest characters (0 = all).")
    n: int = Field(1, ge=1, le=64, description="Choices per prompt; choice j equals "
                   "`charrnn sample --seed SEED -N n`'s sample j.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings; a choice ends just before the "
                                         "first one it generates.")
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX, description="The same seed gives the same text "
                             "(default: random; the response says which seed was used).")
    stream: bool = Field(False, description="Server-sent events, ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    echo: bool = Field(False, description="Put the prompt before each choice's text.")
    user: str | None = None
    # OpenAI fields with no meaning for a character model, accepted only when they change nothing
    best_of: Literal[1] | None = None
    logprobs: None = None
    suffix: None = None
    presence_penalty: Literal[0] | None = None
    frequency_penalty: Literal[0] | None = None
    logit_bias: dict[str, float] | None = Field(None, max_length=0)


class Choice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Characters in the prompt(s).")
    completion_tokens: int = Field(description="Characters generated, all choices.")
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    seed: int = Field(description="The seed used: send it back to get the same text.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "charrnn"
    cell: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    step: int | None
    val_loss: float | None
    watched: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ScoreRequest(_Strict):
    model: str | None = None
    text: str = Field(min_length=2, description="At least 2 characters: N characters give N-1 predictions.")
    per_char: bool = Field(False, description="Also return each predicted character's loss.")


class CharLoss(BaseModel):
    pos: int
    char: str
    loss: float


class ScoreResponse(BaseModel):
    model: str
    loss: float = Field(description="Mean negative log-likelihood, nats per predicted character.")
    bpc: float
    perplexity: float
    chars: int
    predictions: int
    per_char: list[CharLoss] | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# Shown in error messages for fields whose type error pydantic reports once per union member.
EXPECTED = {"prompt": "a string or a list of strings", "stop": "a string or a list of up to 4 strings",
            "stream_options": 'an object like {"include_usage": true}', "logit_bias": "an empty object"}
