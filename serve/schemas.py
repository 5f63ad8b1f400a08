"""Request and response models of the HTTP API (pydantic: they are also the OpenAPI docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ClassifyRequest(BaseModel):
    """Exactly one of `text` (one string) or `texts` (a list of strings)."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"text": "a gripping , funny film ."},
                                                              {"texts": ["loved it", "a dull mess"]}]})

    text: str | None = Field(default=None, description="one text to classify")
    texts: list[str] | None = Field(default=None, description="several texts to classify, in order")

    @model_validator(mode="after")
    def _exactly_one(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('send exactly one of "text" (a string) or "texts" (a list of strings)')
        return self

    def items(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Prediction(BaseModel):
    label: str = Field(description="the predicted label's name")
    score: float = Field(description="probability of the predicted label")
    probs: dict[str, float] = Field(description="probability of every label")


class ClassifyResponse(BaseModel):
    model: str = Field(description="id of the model that answered: <dir name>@<weights hash>")
    predictions: list[Prediction]


class ModelInfo(BaseModel):
    model: str
    path: str
    labels: list[str]
    params: int
    max_length: int
    quantized: bool
    distilled_from: str | None = None
    retention: float | None = None
    speedup: float | None = None
    student_accuracy: float | None = None
    teacher_accuracy: float | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong and how to fix it")
    detail: list | dict | str | None = None
