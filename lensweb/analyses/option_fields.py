"""Form fields derived from the options' declarations (inference.options): label, help, initial value and
bounds come from there, the bounds under the deployment's limits."""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from inference.limits import DEFAULT_LIMITS, Limits
from inference.options import Option, options_of


class IntListField(forms.CharField):
    """Whole numbers separated by commas or spaces ("3, 7, -1"); empty is None."""

    def __init__(self, *, max_items: int | None, low: int | None, high: int | None, **kwargs):
        self.max_items, self.low, self.high = max_items, low, high
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        text = (super().to_python(value) or "").replace(",", " ").split()
        if not text:
            return None
        try:
            numbers = [int(item) for item in text[: (self.max_items or len(text)) + 1]]
        except ValueError:
            raise forms.ValidationError("give whole numbers separated by commas") from None
        if self.max_items is not None and len(text) > self.max_items:
            raise forms.ValidationError(f"at most {self.max_items} of them")
        for number in numbers:
            if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
                raise forms.ValidationError(f"{number} is outside {self.low}–{self.high}")
        return numbers

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return value


def form_field(opt: Option, limits: Limits = DEFAULT_LIMITS, **overrides) -> forms.Field:
    """The form field of one declared option (`overrides`: label or help_text where a form says more)."""
    low, high = opt.bounds(limits)
    common = {"label": opt.label, "help_text": opt.described(limits), **overrides}
    if opt.kind == "bool":
        return forms.BooleanField(required=False, initial=opt.default, **common)
    if opt.kind == "ints":
        field = IntListField(max_items=opt.max_items(limits), low=low, high=high, **common)
        if opt.declared.placeholder:
            field.widget.attrs["placeholder"] = opt.declared.placeholder
        return field
    kind = forms.IntegerField if opt.kind == "int" else forms.FloatField
    field = kind(required=not opt.nullable, initial=opt.default, **common)
    # Bounds as validators and as the input's min/max (the browser's own check comes first).
    for bound, validator, attr in ((low, MinValueValidator, "min"), (high, MaxValueValidator, "max")):
        if bound is not None:
            field.validators.append(validator(bound))
            field.widget.attrs[attr] = bound
    if opt.kind == "float":
        field.widget.attrs["step"] = "0.01"
    return field


def option_fields(
    cls, limits: Limits = DEFAULT_LIMITS, *, skip: tuple[str, ...] = ()
) -> dict[str, forms.Field]:
    """Every declared option of `cls` but `skip`, as form fields, in declaration order."""
    return {opt.name: form_field(opt, limits) for opt in options_of(cls) if opt.name not in skip}
