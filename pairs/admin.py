from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from core.admin_tools import AuditedAdmin, ReadOnlyAdmin
from core.audit import audit_record
from pairs.models import (
    Candle,
    CointegrationRun,
    FundingRate,
    Instrument,
    Level,
    LevelChange,
    Pair,
    PairStatistics,
    PairTest,
    StrategyConfig,
)
from pairs.services.levels import pair_set_level


@admin.register(Instrument)
class InstrumentAdmin(AuditedAdmin):
    list_display = ("symbol", "exchange", "kind", "status", "excluded", "turnover_24h", "tick_size", "qty_step")
    list_filter = ("exchange", "kind", "status", "excluded")
    list_editable = ("excluded",)
    search_fields = ("symbol", "base", "ccxt_symbol")

    def get_readonly_fields(self, request, obj=None):
        # The exchange owns an instrument's terms; an operator only excludes it from selection.
        return [f.name for f in Instrument._meta.fields if f.name != "excluded"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # it would take its candles, pairs and trades with it


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    # Candles come from the exchange or import_candles (which refuses to change stored bars without --overwrite).
    list_display = ("instrument", "timeframe", "open_time", "open", "high", "low", "close", "volume")
    list_filter = ("timeframe",)
    search_fields = ("instrument__symbol",)
    raw_id_fields = ("instrument",)
    date_hierarchy = "open_time"
    show_full_result_count = False  # counting millions of candles on every page load is slow on MySQL


@admin.register(CointegrationRun)
class CointegrationRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "exchange", "timeframe", "status", "n_symbols", "n_tests", "n_passed", "n_candidates",
                    "started_at", "duration_seconds")
    list_filter = ("status", "exchange", "timeframe")


@admin.register(Level)
class LevelAdmin(AuditedAdmin):
    list_display = ("number", "name", "trades_real_capital", "requires_live_evidence", "min_trades", "min_win_rate",
                    "min_profit_factor", "max_drawdown", "max_qvalue", "capital_weight")


class LevelChangeInline(admin.TabularInline):
    model = LevelChange
    fields = ("created_at", "from_level", "to_level", "reason", "changed_by", "automatic")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False


class PairStatisticsInline(admin.TabularInline):
    model = PairStatistics
    fields = ("window", "trades", "win_rate", "profit_factor", "total_return", "max_drawdown", "sharpe", "computed_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Pair)
class PairAdmin(AuditedAdmin):
    list_display = ("__str__", "timeframe", "level", "level_locked", "status", "pvalue", "qvalue", "half_life_bars",
                    "screening_zscore", "consecutive_failures", "last_tested_at")
    list_filter = ("level", "status", "level_locked", "timeframe")
    search_fields = ("y_instrument__symbol", "x_instrument__symbol")
    list_select_related = ("y_instrument", "x_instrument", "level")
    raw_id_fields = ("y_instrument", "x_instrument", "last_run")
    inlines = (PairStatisticsInline, LevelChangeInline)
    actions = ("promote", "demote", "lock_level", "unlock_level")

    def has_change_pair_level_permission(self, request) -> bool:
        return request.user.has_perm("pairs.change_pair_level")

    # What a stored pair is: its legs and timeframe (its trades, orders and statistics were made on them) and what
    # the screening fitted (the trades' spread, bands and grading read it). Only the screening rewrites them; a
    # changed leg would silently rewrite the trade history. A new pair is typed in whole.
    FIXED_ONCE_STORED = ("y_instrument", "x_instrument", "timeframe", "hedge_ratio", "intercept", "adf_stat",
                         "adf_lag", "pvalue", "qvalue", "johansen_trace", "johansen_passed", "half_life_bars",
                         "hurst", "mean_crossings", "spread_mean", "spread_std", "screening_zscore",
                         "return_correlation", "last_run", "last_tested_at", "last_passed_at",
                         "consecutive_failures", "level_changed_at")

    def get_readonly_fields(self, request, obj=None):
        # The level (real capital) moves only with the permission to move it, whatever else the user may edit.
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk is not None:
            readonly += [name for name in self.FIXED_ONCE_STORED if name not in readonly]
            # The status is the screening's and the maintenance's (README): a pair suspended here was resumed by the
            # next maintenance run without a word. To take a pair out by hand, lock it at level 0.
            readonly.append("status")
        if not self.has_change_pair_level_permission(request):
            readonly += ["level", "level_locked"]
        return readonly

    # What the grading writes too: the change form carries the values the person saw (hidden), and only what the
    # person changed from them is written. A form opened before a grading demoted the pair posted its old level,
    # which was taken for the person's choice and undid the demotion. (The status, the maintenance's, is read-only.)
    SHARED_WITH_AUTOMATION = ("level", "level_locked")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            for name in self.SHARED_WITH_AUTOMATION:
                if name in form.base_fields:
                    form.base_fields[name].show_hidden_initial = True
        return form

    @staticmethod
    def _seen(form, name: str, stored: Pair):
        """The value of ``name`` the person saw (the form's hidden initial; a client that posts none saw the stored
        one)."""
        if name in form.fields and form.add_initial_prefix(name) in form.data:
            field = form.fields[name]
            try:
                return field.to_python(form._widget_data_value(field.hidden_widget(), form.add_initial_prefix(name)))
            except ValidationError:
                pass  # not a value this field could have shown: the stored one
        return getattr(stored, name)

    def save_model(self, request, obj, form, change):
        # A level edited here goes through the audited service, not a bare save.
        if not change:
            return self._save_new(request, obj, form)
        stored = Pair.objects.get(pk=obj.pk)
        seen = {name: self._seen(form, name, stored) for name in self.SHARED_WITH_AUTOMATION}
        changed = {name for name in self.SHARED_WITH_AUTOMATION
                   if name in form.fields and getattr(obj, name) != seen[name]}
        new_level, new_lock = obj.level, obj.level_locked
        obj.status = stored.status  # the maintenance's, as stored now (the form was opened before)
        obj.level, obj.level_locked = stored.level, stored.level_locked
        if not changed & {"level", "level_locked"}:
            return super().save_model(request, obj, form, change)
        if not self.has_change_pair_level_permission(request):
            raise PermissionDenied("moving a pair between levels needs the permission pairs.change_pair_level")
        super().save_model(request, obj, form, change)
        target = new_level if "level" in changed else seen["level"]
        lock = new_lock if "level_locked" in changed else None
        with transaction.atomic():
            # Only from the level the person saw: a grading that moved the pair meanwhile is not undone unseen.
            after = pair_set_level(pair=obj, level=target, reason="set in the admin", changed_by=request.user,
                                   lock=lock, from_level_id=seen["level"].pk if seen["level"] else None)
            if after.level_id != (target.pk if target else None) or (lock is not None and after.level_locked != lock):
                messages.warning(request, f"{obj}: its level changed to {after.level or 'none'} since the form was "
                                          "opened; the level and lock set there were not applied. Look at its level "
                                          "changes and set it again.")
                obj.level, obj.level_locked = after.level, after.level_locked
                return None
            audit_record(action="set_pair_level", channel="admin", actor=request.user, target=obj,
                         summary=f"{obj}: level {after.level}, locked {after.level_locked}")
        obj.level, obj.level_locked = after.level, after.level_locked
        return None

    def _save_new(self, request, obj, form):
        if obj.level_id is None:
            return super().save_model(request, obj, form, False)
        # A pair added with a level gets it through the audited service too (its LevelChange row).
        new_level, new_lock, obj.level, obj.level_locked = obj.level, obj.level_locked, None, False
        with transaction.atomic():
            super().save_model(request, obj, form, False)
            pair_set_level(pair=obj, level=new_level, reason="set in the admin when added",
                           changed_by=request.user, lock=new_lock)
            audit_record(action="set_pair_level", channel="admin", actor=request.user, target=obj,
                         summary=f"{obj}: added at level {new_level}, locked {new_lock}")
        obj.refresh_from_db()
        return None

    def _move(self, request, queryset, step: int, verb: str) -> None:
        levels = list(Level.objects.order_by("number"))
        moved, raced = 0, 0
        for pair in queryset.select_related("level"):
            index = levels.index(pair.level) if pair.level in levels else -1
            target = index + step
            if 0 <= target < len(levels):
                with transaction.atomic():
                    # One rung from the level read here: a grading that moved the pair meanwhile is not stepped
                    # over (the row's lock decides; the pair then stays where the grading put it).
                    after = pair_set_level(pair=pair, level=levels[target], reason=f"{verb} in the admin",
                                           changed_by=request.user, from_level_id=pair.level_id)
                    if after.level_id != levels[target].pk:
                        raced += 1
                        continue
                    audit_record(action=f"{verb}_pair", channel="admin", actor=request.user, target=pair,
                                 summary=f"{pair}: {verb} to L{levels[target].number}")
                moved += 1
        messages.success(request, f"{verb.capitalize()} {moved} pair(s); a pair at the end of the ladder stays. "
                                  "The next grading may move a pair whose level is not locked: lock it to keep it."
                                  + (f" {raced} pair(s) changed level meanwhile and were left where they are."
                                     if raced else ""))

    @admin.action(description="Promote the selected pairs one level", permissions=["change_pair_level"])
    def promote(self, request, queryset):
        self._move(request, queryset, +1, "promoted")

    @admin.action(description="Demote the selected pairs one level", permissions=["change_pair_level"])
    def demote(self, request, queryset):
        self._move(request, queryset, -1, "demoted")

    def _lock(self, request, queryset, lock: bool) -> None:
        verb = "locked" if lock else "unlocked"
        for pair in queryset:
            with transaction.atomic():
                pair_set_level(pair=pair, level=pair.level, reason=f"{verb} in the admin", changed_by=request.user,
                               lock=lock)
                audit_record(action=f"{verb}_pair_level", channel="admin", actor=request.user, target=pair,
                             summary=f"{pair}: level {verb}")
        messages.success(request, f"{verb.capitalize()} {queryset.count()} pair(s).")

    @admin.action(description="Lock the level of the selected pairs", permissions=["change_pair_level"])
    def lock_level(self, request, queryset):
        self._lock(request, queryset, True)

    @admin.action(description="Unlock the level of the selected pairs", permissions=["change_pair_level"])
    def unlock_level(self, request, queryset):
        self._lock(request, queryset, False)


@admin.register(PairTest)
class PairTestAdmin(ReadOnlyAdmin):
    list_display = ("pair", "run", "adf_stat", "adf_lag", "pvalue", "qvalue", "half_life_bars", "passed",
                    "confirmed_out_of_sample")
    list_filter = ("passed", "confirmed_out_of_sample")
    raw_id_fields = ("pair", "run")


@admin.register(PairStatistics)
class PairStatisticsAdmin(ReadOnlyAdmin):
    list_display = ("pair", "window", "trades", "win_rate", "profit_factor", "total_return", "max_drawdown", "sharpe",
                    "computed_at")
    list_filter = ("window",)
    raw_id_fields = ("pair",)


@admin.register(LevelChange)
class LevelChangeAdmin(admin.ModelAdmin):
    list_display = ("created_at", "pair", "from_level", "to_level", "reason", "actor", "automatic")
    list_filter = ("automatic", "to_level")
    raw_id_fields = ("pair",)

    # The audit is append-only: nobody edits or deletes history.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(StrategyConfig)
class SelectionConfigAdmin(AuditedAdmin):
    list_display = ("__str__", "lookback_bars", "confirmation_bars", "max_pvalue", "max_qvalue", "min_turnover_24h",
                    "min_history_bars", "updated_at")
    refuse_stale_edits = True  # one row every signal, grading and backtest reads: never saved over a colleague's edit

    def has_add_permission(self, request):
        return not StrategyConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(FundingRate)
class FundingRateAdmin(ReadOnlyAdmin):
    list_display = ("instrument", "funding_time", "rate")
    search_fields = ("instrument__symbol",)
    raw_id_fields = ("instrument",)
    date_hierarchy = "funding_time"
    show_full_result_count = False
