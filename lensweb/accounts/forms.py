from django import forms

from . import keys


def validate_key_name(value: str) -> None:
    bad = keys.unprintable_in(value)
    if bad is not None:
        raise forms.ValidationError(
            "the name may not hold line breaks, tabs or other control or formatting characters "
            f"(found U+{ord(bad):04X}); use letters, digits, spaces and punctuation"
        )


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=keys.NAME_MAX_LENGTH,
        validators=[validate_key_name],
        help_text="What the key is for, e.g. “laptop notebook” or “nightly sweep”.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. laptop notebook", "autocomplete": "off"}),
    )
