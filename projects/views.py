"""Pages of the projects app: being written."""


def inbox(request, **kwargs):
    raise NotImplementedError


def problem_list(request, **kwargs):
    raise NotImplementedError


def problem_propose(request, **kwargs):
    raise NotImplementedError


def problem_detail(request, **kwargs):
    raise NotImplementedError


def problem_edit(request, **kwargs):
    raise NotImplementedError


def problem_revise(request, **kwargs):
    raise NotImplementedError


def problem_revision(request, **kwargs):
    raise NotImplementedError


def problem_diff(request, **kwargs):
    raise NotImplementedError


def participation_action(request, **kwargs):
    raise NotImplementedError


def dataset_register(request, **kwargs):
    raise NotImplementedError


def dataset_withdraw(request, **kwargs):
    raise NotImplementedError


def agreement_list(request, **kwargs):
    raise NotImplementedError


def agreement_draft(request, **kwargs):
    raise NotImplementedError


def agreement_detail(request, **kwargs):
    raise NotImplementedError


def agreement_print(request, **kwargs):
    raise NotImplementedError


def agreement_action(request, **kwargs):
    raise NotImplementedError
