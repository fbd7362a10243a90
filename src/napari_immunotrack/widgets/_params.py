"""napari forms made from a :class:`~napari_immunotrack.params.ParamModel` (magicgui widgets).

As magicgui builds a form from a function's signature, :func:`build_form`
builds one from a parameter model: a float becomes a ``FloatSpinBox``, an int
a ``SpinBox``, a bool a ``CheckBox``, a parameter with choices a ``ComboBox``;
value, range, step, label and tooltip all come from the model, so the form
cannot show another default than the CLI, the batch step or the function.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..params import ParamModel


def make_widget(param):
    """The magicgui widget of one :class:`~napari_immunotrack.params.Param` (its value is the default)."""
    from magicgui import widgets

    tip = param.describe()
    common = dict(name=param.name, label=param.form_label, tooltip=tip)
    if param.choices is not None:
        return widgets.ComboBox(value=param.default, choices=list(param.choices), **common)
    if param.type is bool:
        return widgets.CheckBox(value=bool(param.default), text=param.form_label, name=param.name, tooltip=tip)
    if param.type in (int, float):
        lo = param.minimum if param.minimum is not None else -1e9
        if param.form_minimum is not None:
            lo = param.form_minimum
        hi = param.maximum if param.maximum is not None else 1e9
        if param.form_maximum is not None:
            hi = param.form_maximum
        if param.type is int:
            return widgets.SpinBox(
                value=int(param.default), min=int(lo), max=int(hi), step=int(param.step or 1), **common
            )
        value = float(lo if param.default is None else param.default)
        widget = widgets.FloatSpinBox(
            value=value, min=float(lo), max=float(hi), step=float(param.step or 0.1), **common
        )
        widget.native.setDecimals(param.decimals)
        widget.value = value  # again: the decimals may have rounded it
        return widget
    return widgets.LineEdit(value=str(param.default or ""), **common)


def build_form(model: ParamModel, names: Iterable[str] | None = None, form_layout=None) -> dict[str, object]:
    """magicgui widgets for some of a model's parameters ({name: widget}), in the model's order.

    With ``form_layout`` (a ``QFormLayout``) each widget is added as a row
    (label, widget); a check box carries its own text.
    """
    wanted = list(model.names if names is None else names)
    out = {}
    for p in model:
        if p.name not in wanted:
            continue
        widget = make_widget(p)
        out[p.name] = widget
        if form_layout is not None:
            add_row(form_layout, p, widget)
    return out


def add_row(form_layout, param, widget) -> None:
    """Add a form widget as a row of a ``QFormLayout`` (label from the model; a check box carries its own).

    For docks that place rows of their own between the model's (build the form without a layout,
    then add its rows in the order the dock shows them).
    """
    form_layout.addRow("" if param.type is bool else param.form_label, widget.native)


def form_values(form: dict[str, object]) -> dict:
    """{name: value} of a form made by :func:`build_form`."""
    return {name: widget.value for name, widget in form.items()}


def set_form_values(form: dict[str, object], values: dict) -> None:
    """Show ``values`` in a form (keys the form lacks are ignored)."""
    for name, value in values.items():
        if name in form and value is not None:
            form[name].value = value
