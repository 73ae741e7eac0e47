from django import forms


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What the key is for, e.g. “laptop notebook” or “nightly sweep”.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. laptop notebook", "autocomplete": "off"}),
    )
