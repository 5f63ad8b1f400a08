"""Request and response models of the HTTP API (pydantic: they are also the OpenAPI docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ClassifyRequest(BaseModel):
    """Exactly one of `text` (one string) or `texts` (a list of strings); for a sentence-pair model,
    with `text_pair` (or `text_pairs`, one per text) as the second text of each pair."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"text": "a gripping , funny film ."},
                                                              {"texts": ["loved it", "a dull mess"]},
                                                              {"text": "He left.", "text_pair": "He went away."}]})

    text: str | None = Field(default=None, description="one text to classify")
    texts: list[str] | None = Field(default=None, description="several texts to classify, in order")
    text_pair: str | None = Field(default=None, description="sentence-pair models: the second text of `text`")
    text_pairs: list[str] | None = Field(default=None, description="sentence-pair models: the second text "
                                                                    "of each of `texts`, in order")

    @model_validator(mode="after")
    def _exactly_one(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('send exactly one of "text" (a string) or "texts" (a list of strings)')
        if self.text_pair is not None and self.text is None:
            raise ValueError('"text_pair" goes with "text"; with "texts" send "text_pairs"')
        if self.text_pairs is not None and self.texts is None:
            raise ValueError('"text_pairs" goes with "texts"; with "text" send "text_pair"')
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts or []):
            raise ValueError(f'"text_pairs" has {len(self.text_pairs)} items but "texts" has '
                             f'{len(self.texts or [])}; send one text_pair per text')
        return self

    def items(self) -> list[str | tuple[str, str]]:
        """The texts, or (text, text_pair) tuples when the request carries pairs."""
        if self.text is not None:
            return [self.text if self.text_pair is None else (self.text, self.text_pair)]
        texts = list(self.texts or [])
        return texts if self.text_pairs is None else list(zip(texts, self.text_pairs))


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
    task: str = Field(default="single", description="single: one text per input; pair: text and text_pair; "
                                                    "qa: question and context (POST /v1/answer)")
    params: int
    max_length: int
    doc_stride: int | None = Field(default=None, description="qa: tokens shared by consecutive windows")
    max_answer_length: int | None = Field(default=None, description="qa: the longest answer, in tokens")
    quantized: bool
    backend: str = Field(default="torch", description="torch, or onnx (ONNX Runtime on the model's ONNX export)")
    distilled_from: str | None = None
    retention: float | None = None
    speedup: float | None = None
    student_accuracy: float | None = None
    teacher_accuracy: float | None = None


class AnswerRequest(BaseModel):
    """One question on one context (POST /v1/answer); a batch is a JSON list of these."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"question": "Where was the treaty signed?",
         "context": "After months of talks, the treaty was signed in Paris in 1783."}]})

    question: str = Field(description="the question")
    context: str = Field(description="the text that holds the answer; read in overlapping windows when long")


class Answer(BaseModel):
    answer: str = Field(description="the answer: context[start:end]")
    score: float = Field(description="p(start) * p(end), each softmax over the context tokens of its window")
    start: int = Field(description="first character of the answer in the context")
    end: int = Field(description="one past its last character")


class AnswerResponse(BaseModel):
    model: str = Field(description="id of the model that answered: <dir name>@<weights hash>")
    answers: list[Answer] = Field(description="one per question, in request order")


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong and how to fix it")
    detail: list | dict | str | None = None
