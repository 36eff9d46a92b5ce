"""Batched L-BFGS: T independent runs of ``torch.optim.LBFGS`` at once, without line search
(DLG's setting) or with its strong-Wolfe line search.

Every trial keeps its own curvature history, direction, step, line search and stopping state
and follows exactly the algorithm of ``torch.optim.LBFGS.step`` (PyTorch's ``lbfgs.py``); the
trials only share the evaluations: the caller evaluates the objective at :attr:`x` for all
active trials in one batched computation and hands (loss, gradient) to :meth:`tick`. A trial
whose evaluation starts an optimizer step (``starts_step``) is where ``LBFGS.step`` would
return its loss.
"""
from __future__ import annotations

from typing import Generator

import torch
import torch.nn.functional as F
from torch.optim.lbfgs import _cubic_interpolate

LINE_SEARCHES = (None, "strong_wolfe")


def strong_wolfe(t, d: torch.Tensor, f: float, g: torch.Tensor, gtd: torch.Tensor, c1: float = 1e-4,
                 c2: float = 0.9, tolerance_change: float = 1e-9, max_ls: int = 25
                 ) -> Generator[object, tuple[float, torch.Tensor], tuple[float, torch.Tensor, object, int]]:
    """``torch.optim.lbfgs._strong_wolfe`` line by line, as a generator: it yields each step
    length ``t`` to evaluate at x + t d and is sent back (loss, gradient) there, so that many
    trials' line searches share batched evaluations. Returns (f, g, t, evaluations)."""
    d_norm = d.abs().max()
    g = g.clone()
    f_new, g_new = yield t
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.clone(), gtd_new
        f_new, g_new = yield t
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    # zoom phase: refine the bracket until a point satisfies the strong Wolfe conditions
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = yield t
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.clone(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.clone(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _matvec(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """M[t] @ v[t] for M [T, H, n] and v [T, n], in the form that streams M once (bmm's
    matrix-vector path is several times slower on CPU)."""
    return torch.bmm(v[:, None, :], M.mT).squeeze(1)


class BatchedLBFGS:
    """The state machine of ``torch.optim.LBFGS(lr, max_iter, max_eval, tolerance_grad,
    tolerance_change, history_size, line_search_fn)`` for a batch of flat parameters ``x0``
    (T x n), advanced one closure evaluation per trial per :meth:`tick`. ``line_search_fn`` is
    None (a fixed step ``lr``) or ``"strong_wolfe"`` (each trial runs its own line search,
    :func:`strong_wolfe`; the evaluations stay batched)."""

    def __init__(self, x0: torch.Tensor, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None):
        if x0.dim() != 2:
            raise ValueError(f"x0 must be T x n, got shape {tuple(x0.shape)}")
        if line_search_fn not in LINE_SEARCHES:
            raise ValueError(f"line_search_fn must be one of {LINE_SEARCHES}, got {line_search_fn!r}")
        self.line_search_fn = line_search_fn
        T, n = x0.shape
        self.lr, self.max_iter = lr, max_iter
        self.max_eval = max_eval if max_eval is not None else max_iter * 5 // 4
        self.tolerance_grad, self.tolerance_change, self.history_size = tolerance_grad, tolerance_change, history_size
        z = lambda *s, dtype=x0.dtype: torch.zeros(*s, dtype=dtype, device=x0.device)
        self.x = x0.detach().clone()
        self.d, self.t = z(T, n), z(T)
        self.prev_flat_grad, self.prev_loss = z(T, n), z(T)
        self.H_diag = torch.ones(T, dtype=x0.dtype, device=x0.device)
        # The history: steps s in slots [0, H) and gradient changes y in [H, 2H) of one ring
        # buffer, so that one pass over it gives every s.v and y.v. Its inner products are
        # kept in logical order (0 = oldest), zero beyond each trial's history.
        self.hist = z(T, 2 * history_size, n)
        self.old_stps, self.old_dirs = self.hist[:, :history_size], self.hist[:, history_size:]
        self.ro = z(T, history_size)                 # 1 / (y_i . s_i)
        self.SY = z(T, history_size, history_size)  # SY[i, j] = s_i . y_j
        self.YY = z(T, history_size, history_size)  # YY[i, j] = y_i . y_j
        self.Pg = z(T, 2 * history_size)             # [S; Y] . prev_flat_grad
        self.Yd = z(T, history_size)                 # Y . d, the direction last taken
        self.hist_len = z(T, dtype=torch.long)
        self.hist_start = z(T, dtype=torch.long)
        self.total_iter = z(T, dtype=torch.long)   # state['n_iter']
        self.n_iter = z(T, dtype=torch.long)       # the step's local n_iter
        self.current_evals = z(T, dtype=torch.long)
        self.loss = z(T)
        self.starts_step = torch.ones(T, dtype=torch.bool, device=x0.device)  # next evaluation starts a step
        self.in_line_search = torch.zeros(T, dtype=torch.bool, device=x0.device)
        self._searches: dict[int, Generator] = {}  # trial -> its running line search
        self._x_init: dict[int, torch.Tensor] = {}  # trial -> x where its line search started

    def tick(self, loss: torch.Tensor, grad: torch.Tensor, active: torch.Tensor) -> None:
        """Consume the evaluation (loss [T], grad [T x n]) at :attr:`x` of the ``active`` trials
        and move each of them to the point of its next evaluation."""
        loss, grad = loss.detach().to(self.x.dtype), grad.detach().to(self.x.dtype)
        searched = active & self.in_line_search
        go_on = torch.zeros_like(active)
        if searched.any():
            grad = grad.clone()
            go_on = self._search_tick(searched.nonzero().flatten().tolist(), loss, grad)
            active = active & ~searched
        A = active & self.starts_step
        B = active & ~self.starts_step
        opt_cond = grad.abs().amax(-1) <= self.tolerance_grad
        self.loss = torch.where(active, loss, self.loss)
        # start of LBFGS.step: orig_loss = closure(); return at once if the gradient is tiny
        self.current_evals = torch.where(A, 1, self.current_evals)
        self.n_iter = torch.where(A, 0, self.n_iter)
        go = A & ~opt_cond
        # after an evaluation inside the loop: the loop's stopping tests, in torch's order
        self.current_evals = self.current_evals + B.long()
        stop_b = (self.current_evals >= self.max_eval) | opt_cond \
            | ((self.d * self.t[:, None]).abs().amax(-1) <= self.tolerance_change) \
            | ((loss - self.prev_loss).abs() < self.tolerance_change)
        go = go | (B & ~stop_b)
        self.starts_step = torch.where(active & ~go, True, self.starts_step)
        go = go | go_on
        if go.any():
            self._iterate(go, grad)

    def _search_tick(self, trials: list[int], loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Send each searching trial's evaluation to its line search; a finished search moves
        the trial to its chosen point (its loss and gradient written into ``grad``) and applies
        LBFGS.step's stopping tests. Returns the trials whose step goes on."""
        go_on = torch.zeros_like(self.in_line_search)
        for i in trials:
            try:
                step = self._searches[i].send((float(loss[i]), grad[i]))
                self.x[i] = self._x_init[i].add(self.d[i], alpha=float(step))
                continue
            except StopIteration as finished:
                f_new, g_new, t, evals = finished.value
            del self._searches[i]
            self.in_line_search[i] = False
            self.x[i] = self._x_init.pop(i).add(self.d[i], alpha=float(t))
            self.t[i], self.loss[i], grad[i] = float(t), f_new, g_new
            self.current_evals[i] += evals
            stop = (int(self.n_iter[i]) == self.max_iter or int(self.current_evals[i]) >= self.max_eval
                    or bool(g_new.abs().max() <= self.tolerance_grad)
                    or bool((self.d[i] * float(t)).abs().max() <= self.tolerance_change)
                    or abs(f_new - float(self.prev_loss[i])) < self.tolerance_change)
            if stop:
                self.starts_step[i] = True
            else:
                go_on[i] = True
        return go_on

    def _logical(self, P: torch.Tensor) -> torch.Tensor:
        """[T, 2H] values per ring-buffer slot of [S; Y] -> logical order (oldest first)."""
        H = self.history_size
        perm = (self.hist_start[:, None] + torch.arange(H, device=P.device)) % H
        return torch.cat([torch.gather(P[:, :H], 1, perm), torch.gather(P[:, H:], 1, perm)], 1)

    def _push(self, push: torch.Tensor, y: torch.Tensor, s: torch.Tensor, ys: torch.Tensor, yy: torch.Tensor,
              P: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Append (y, s, 1/ys) to the histories of the trials in ``push`` (a mask), dropping the
        oldest when full, and keep the inner products and ``P`` = [S; Y] . g (returned) current
        without reading the history: s_i.y = s_i.g - s_i.g_prev and y_i.s = t y_i.d (``Pg``,
        ``Yd``: kept from the last step). ``yy`` = y.y per trial."""
        H = self.history_size
        full = push & (self.hist_len == H)
        if full.any():  # the oldest pair leaves: every logical position moves down by one
            every = bool(full.all())
            drop = lambda v, shifted: shifted if every else torch.where(full.view(-1, *[1] * (v.dim() - 1)), shifted, v)
            shift = lambda v: F.pad(v[..., 1:], (0, 1))  # the last axis
            pairs = lambda v: torch.cat([shift(v[:, :H]), shift(v[:, H:])], 1)
            self.ro, self.Yd = drop(self.ro, shift(self.ro)), drop(self.Yd, shift(self.Yd))
            self.SY = drop(self.SY, F.pad(self.SY[:, 1:, 1:], (0, 1, 0, 1)))
            self.YY = drop(self.YY, F.pad(self.YY[:, 1:, 1:], (0, 1, 0, 1)))
            self.Pg, P = drop(self.Pg, pairs(self.Pg)), drop(P, pairs(P))
        slot = torch.where(full, self.hist_start, (self.hist_start + self.hist_len) % H)
        pos = torch.where(full, H - 1, self.hist_len)
        valid = (torch.arange(H, device=pos.device) < pos[:, None]).to(s.dtype)
        sy_row = self.Yd * self.t[:, None] * valid          # s_new . y_j
        sy_col = (P[:, :H] - self.Pg[:, :H]) * valid         # s_i . y_new
        yy_col = (P[:, H:] - self.Pg[:, H:]) * valid         # y_i . y_new
        sg, yg = (s * g).sum(-1), (y * g).sum(-1)
        idx = push.nonzero().squeeze(1)
        slot, pos = slot[idx], pos[idx]
        self.old_dirs[idx, slot] = y[idx]
        self.old_stps[idx, slot] = s[idx]
        self.ro[idx, pos] = 1.0 / ys[idx]
        self.SY[idx, pos] = sy_row[idx]
        self.SY[idx, :, pos] = sy_col[idx]
        self.SY[idx, pos, pos] = ys[idx]
        self.YY[idx, pos] = self.YY[idx, :, pos] = yy_col[idx]
        self.YY[idx, pos, pos] = yy[idx]
        P[idx, pos], P[idx, H + pos] = sg[idx], yg[idx]
        self.hist_start = torch.where(full, (self.hist_start + 1) % H, self.hist_start)
        self.hist_len = torch.where(push & ~full, self.hist_len + 1, self.hist_len)
        return P

    def _two_loop(self, g: torch.Tensor, rows: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The direction of LBFGS's two-loop recursion, -H g, for every trial, and Y . d.

        The recursion's coefficients al_i = ro_i s_i.q and be_i = ro_i y_i.r depend on the
        earlier ones only through inner products, so each loop is one triangular solve
        (forward substitution = the loop itself) over S.Y and Y.Y, and the direction
        d = -H_diag g + S^T (al - be) - H_diag Y^T al is one pass over the history (``P`` =
        [S; Y] . g, logical order, was the other): the same recursion in a different order.
        Positions beyond a trial's history have ro = 0, hence al = be = 0.
        """
        H, H_diag = self.history_size, self.H_diag[:, None]
        m = int(torch.where(rows, self.hist_len, 0).max())
        if m == 0:
            return -g * H_diag, torch.zeros_like(self.Yd)
        ro, SY, YY = self.ro[:, :m], self.SY[:, :m, :m], self.YY[:, :m, :m]
        # first loop, newest to oldest: al_i = ro_i (-s_i.g - sum_{j>i} al_j s_i.y_j), i.e.
        # (I + ro triu(S.Y, 1)) al = -ro S.g (the solve reads only the strict upper triangle)
        al = torch.linalg.solve_triangular(ro[:, :, None] * SY, (-ro * P[:, :m])[:, :, None], upper=True,
                                           unitriangular=True).squeeze(-1)
        # q = -g - Y^T al and r = H_diag q, so y_i.r = H_diag (-y_i.g - sum_j al_j y_i.y_j)
        Yr = -H_diag * (P[:, H:H + m] + _matvec(YY, al))
        # second loop, oldest to newest: be_i = ro_i (y_i.r + sum_{j<i} (al_j - be_j) s_j.y_i);
        # u = al - be solves (I + ro tril(Y.S, -1)) u = al - ro Y.r
        u = torch.linalg.solve_triangular(ro[:, :, None] * SY.transpose(1, 2), (al - ro * Yr)[:, :, None],
                                          upper=False, unitriangular=True).squeeze(-1)
        c_s, c_y = u, -H_diag * al
        slots = (self.hist_start[:, None] + torch.arange(m, device=g.device)) % H
        coef = torch.zeros(len(g), 2 * H, dtype=g.dtype, device=g.device)
        coef.scatter_(1, slots, c_s).scatter_(1, H + slots, c_y)
        d = torch.baddbmm(-H_diag[:, :, None] * g[:, None, :], coef[:, None, :], self.hist).squeeze(1)
        Yd = torch.zeros_like(self.Yd)
        Yd[:, :m] = (Yr + _matvec(SY.transpose(1, 2), u)) * (ro != 0)  # Y.d = Y.r + Y.S u
        return d, Yd

    def _iterate(self, go: torch.Tensor, g: torch.Tensor) -> None:
        """One pass of the body of LBFGS.step's while loop for the trials in ``go``."""
        self.n_iter = self.n_iter + go.long()
        self.total_iter = self.total_iter + go.long()
        first = go & (self.total_iter == 1)
        later = go & ~first
        if later.any():
            y = g - self.prev_flat_grad
            s = self.d * self.t[:, None]
            ys = (y * s).sum(-1)
            push = later & (ys > 1e-10)
            P = self._logical(_matvec(self.hist, g))  # the first of the two passes over the history
            if push.any():
                yy = (y * y).sum(-1)
                P = self._push(push, y, s, ys, yy, P, g)
                self.H_diag = torch.where(push, ys / yy, self.H_diag)
            d, Yd = self._two_loop(g, later, P)
            self.d = torch.where(later[:, None], d, self.d)
            self.Yd = torch.where(later[:, None], Yd, self.Yd)
            self.Pg = torch.where(later[:, None], P, self.Pg)
        if first.any():
            self.d = torch.where(first[:, None], -g, self.d)
            self.hist_len = torch.where(first, 0, self.hist_len)
            self.hist_start = torch.where(first, 0, self.hist_start)
            self.H_diag = torch.where(first, 1.0, self.H_diag)
            for v in (self.ro, self.SY, self.YY, self.Pg, self.Yd):  # an empty history
                v[first] = 0
        self.prev_flat_grad = torch.where(go[:, None], g, self.prev_flat_grad)
        self.prev_loss = torch.where(go, self.loss, self.prev_loss)
        t_first = torch.clamp(1.0 / g.abs().sum(-1), max=1.0) * self.lr
        self.t = torch.where(first, t_first, torch.where(go, torch.full_like(self.t, self.lr), self.t))
        gtd = (g * self.d).sum(-1)
        move = go & ~(gtd > -self.tolerance_change)
        if self.line_search_fn is None:
            self.x = torch.where(move[:, None], self.x + self.t[:, None] * self.d, self.x)
            # evaluate next inside this step unless it broke on gtd or reached max_iter
            self.starts_step = torch.where(go, ~move | (self.n_iter == self.max_iter), self.starts_step)
            return
        self.starts_step = torch.where(go & ~move, True, self.starts_step)
        for i in move.nonzero().flatten().tolist():  # start each trial's line search
            t = min(1.0, 1.0 / g[i].abs().sum()) * self.lr if int(self.total_iter[i]) == 1 else self.lr
            search = strong_wolfe(t, self.d[i], float(self.loss[i]), g[i], g[i].dot(self.d[i]),
                                  tolerance_change=self.tolerance_change)
            self._x_init[i] = self.x[i].clone()
            self.x[i] = self._x_init[i].add(self.d[i], alpha=float(next(search)))
            self._searches[i] = search
            self.in_line_search[i] = True
            self.starts_step[i] = False
